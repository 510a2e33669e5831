"""Reading positions from Redis (the projection written by the dataflow), from the current
generation of the keyspace or from one named explicitly."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from state.projection import DEFAULT_GENERATION, READY, Generations, KeySpace, current_name, from_flat, from_hash

ALERT_KINDS = ("DRIFT", "OVERSOLD")


class KeyspaceNotReady(Exception):
    """The keyspace is lost, never written, or being re-published: its numbers must not be served."""

    def __init__(self, state: str | None) -> None:
        self.state = state or "missing"
        super().__init__(
            "the position store is being re-published after a Redis loss; retry shortly"
            if state else "the position store holds no keyspace (Redis lost it, or the dataflow never ran); "
            "the dataflow re-publishes it when it runs"
        )


class UnknownGeneration(Exception):
    """A generation asked for by name that does not exist (any more)."""

    def __init__(self, name: str, retired: bool) -> None:
        self.name, self.retired = name, retired
        super().__init__(f"generation '{name}' was retired after a switch" if retired else
                         f"no generation '{name}' (see `atp generation list`)")


def _text(v: bytes | str | None) -> str | None:
    return v.decode() if isinstance(v, bytes) else v


@dataclass(frozen=True)
class Read:
    generation: str
    results: list[Any]


Build = Callable[[Any, KeySpace], None]


# Positions in one command: the pointer, the generation's meta and each position, as ``_read``'s
# pipeline reads them. For one key, one command instead of three took 58 instead of 100 us of the
# API's CPU per read; the single-key reads that arrive together (many, under load) share one
# command, and a batch is one command instead of a pipeline of one per key. Not in Redis Cluster:
# the keys live in different slots there.
_READ_KEYS = """
local out = {redis.call('GET', KEYS[1]), redis.call('HMGET', KEYS[2], 'state', 'retire_at')}
for i = 3, #KEYS do out[i] = redis.call('HGETALL', KEYS[i]) end
return out
"""
MAX_COALESCED = 256  # keys of one script call; more reads of one turn take more calls

Fetched = tuple[Any, Any, Any, list[Any]]  # (pointer, meta state, meta retire_at, results)


class PositionStore:
    """Every read checks, in the same round trip, that its generation is complete (its meta says
    ready) and, when it follows the current generation, that the pointer still names it: after a
    switch the read is done again on the new generation, so one answer never mixes two."""

    def __init__(self, client: aioredis.Redis, generations: Generations, cluster: bool = False) -> None:
        self.client = client
        self.gens = generations
        self._current = DEFAULT_GENERATION  # the pointer as last seen
        self._read_keys = None if cluster else client.register_script(_READ_KEYS)
        self._waiting: list[tuple[str, str, asyncio.Future[Read]]] = []  # reads of this turn, not yet sent
        self._sending: set[asyncio.Task[None]] = set()  # the calls in flight (held: the loop keeps weak references)

    async def _read(self, generation: str | None, build: Build, explicit: bool = False) -> Read:
        async def pipelined(ks: KeySpace) -> Fetched:
            pipe = self.client.pipeline(transaction=False)
            pipe.get(self.gens.pointer)
            pipe.hmget(ks.meta, "state", "retire_at")
            build(pipe, ks)
            pointer, (state, retire_at), *results = await pipe.execute()
            return pointer, state, retire_at, results

        return await self._checked(generation, explicit, pipelined)

    async def _checked(self, generation: str | None, explicit: bool, fetch: Callable[[KeySpace], Awaitable[Fetched]]) -> Read:
        for _ in range(3):
            name = generation or self._current
            pointer, state, retire_at, results = await fetch(self.gens.keyspace(name))
            if generation is None and current_name(pointer) != name:
                self._current = current_name(pointer)
                continue
            state = _text(state)
            if explicit and (state is None or (retire_at and int(retire_at) <= time.time() * 1000)):
                raise UnknownGeneration(name, retired=state is not None)
            if state != READY:
                raise KeyspaceNotReady(state)
            return Read(name, results)
        raise KeyspaceNotReady("switching")  # the pointer moved three times during one request

    async def get_one(self, sku: str, location: str) -> Read:
        """``get_many`` of one key of the current generation. The reads that arrive in the same
        turn of the event loop (concurrent requests) go to Redis together, as one command."""
        if self._read_keys is None:
            return await self.get_many([(sku, location)])
        future: asyncio.Future[Read] = asyncio.get_running_loop().create_future()
        self._waiting.append((sku, location, future))
        if len(self._waiting) == 1:  # the first of this turn: send them all once the turn's requests are in
            asyncio.get_running_loop().call_soon(self._send_waiting)
        return await future

    def _send_waiting(self) -> None:
        waiting, self._waiting = self._waiting, []
        for i in range(0, len(waiting), MAX_COALESCED):
            task = asyncio.get_running_loop().create_task(self._read_together(waiting[i:i + MAX_COALESCED]))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    def _scripted(self, pairs: list[tuple[str, str]]) -> Callable[[KeySpace], Awaitable[Fetched]]:
        """The fetch of the pointer, the meta and ``pairs``' positions in one script call."""
        async def fetch(ks: KeySpace) -> Fetched:
            keys = [self.gens.pointer, ks.meta, *(ks.position(sku, loc) for sku, loc in pairs)]
            pointer, (state, retire_at), *flats = await self._read_keys(keys=keys)  # type: ignore[misc]
            return pointer, state, retire_at, [from_flat(f) for f in flats]

        return fetch

    async def _read_together(self, reads: list[tuple[str, str, asyncio.Future[Read]]]) -> None:
        try:
            read = await self._checked(None, False, self._scripted([(sku, loc) for sku, loc, _ in reads]))
        except Exception as exc:  # each request gets the error it would have got on its own
            for _, _, future in reads:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # the server is stopping
            for _, _, future in reads:
                future.cancel()
            raise
        for (_, _, future), result in zip(reads, read.results):
            if not future.done():  # a request that was cancelled (its client left) is skipped
                future.set_result(Read(read.generation, [result]))

    async def get_many(self, pairs: list[tuple[str, str]], generation: str | None = None) -> Read:
        if self._read_keys is not None:
            return await self._checked(generation, generation is not None, self._scripted(pairs))

        def build(pipe: Any, ks: KeySpace) -> None:
            for sku, location in pairs:
                pipe.hgetall(ks.position(sku, location))

        read = await self._read(generation, build, explicit=generation is not None)
        return Read(read.generation, [from_hash(raw) for raw in read.results])

    async def for_sku(self, sku: str, generation: str | None = None) -> Read:
        read = await self._read(generation, lambda pipe, ks: pipe.smembers(ks.locations(sku)),
                                explicit=generation is not None)
        locations = sorted(_text(m) for m in read.results[0])  # type: ignore[type-var]
        # The second round trip reads the same generation and checks its meta again on purpose: a
        # loss between the two would otherwise give a partial SKU (wrong totals) instead of a 503.
        found = await self.get_many([(sku, loc) for loc in locations], read.generation)
        return Read(read.generation, [p for p in found.results if p is not None])

    async def for_group(self, sku: str, group: str, locations: list[str], generation: str | None = None) -> Read:
        """A group's position of ``sku`` (or None) followed by its members' positions, in one read."""
        def build(pipe: Any, ks: KeySpace) -> None:
            pipe.hgetall(ks.group(sku, group))
            for loc in locations:
                pipe.hgetall(ks.position(sku, loc))

        read = await self._read(generation, build, explicit=generation is not None)
        return Read(read.generation, [from_hash(raw) for raw in read.results])

    async def alerts_of_key(self, sku: str, location: str, generation: str | None = None) -> Read:
        """The latest alert of each kind for one key, as dicts (DRIFT first)."""
        read = await self._read(generation, lambda pipe, ks: pipe.hgetall(ks.alert(sku, location)),
                                explicit=generation is not None)
        raw = {_text(k): v for k, v in read.results[0].items()}
        found = [json.loads(raw[kind]) for kind in ALERT_KINDS if kind in raw]
        return Read(read.generation, found)

    async def recent_alerts(self, location: str | None, accept: Callable[[dict[str, Any]], bool], limit: int,
                            generation: str | None = None) -> Read:
        """The keys' latest alerts, newest ``as_of`` first, that ``accept`` takes, at most ``limit``."""
        out: list[dict[str, Any]] = []
        start, page = 0, max(limit, 100)
        name = generation
        while len(out) < limit:
            first, last = start, start + page - 1
            read = await self._read(name, lambda pipe, ks: pipe.zrevrange(ks.alerts(location), first, last),
                                    explicit=generation is not None)
            name = read.generation  # later pages read the same generation
            members = [_text(m) for m in read.results[0]]
            if not members:
                break
            ks = self.gens.keyspace(name)
            pipe = self.client.pipeline(transaction=False)
            for m in members:
                kind, key = m.split("|", 1)  # type: ignore[union-attr]
                sku, loc = key.split("@", 1)
                pipe.hget(ks.alert(sku, loc), kind)
            for body in await pipe.execute():
                if body is not None and accept(alert := json.loads(body)) and len(out) < limit:
                    out.append(alert)
            start += page
        return Read(name or self._current, out)

    async def check_ready(self) -> str:
        return (await self._read(None, lambda pipe, ks: None)).generation

    async def ping(self) -> bool:
        return bool(await self.client.ping())
