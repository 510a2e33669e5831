"""Reading positions from Redis (the projection written by the dataflow), from the current
generation of the keyspace or from one named explicitly."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from projection.codec import MAX_EPOCH_MS, Unreadable, read_lineage, read_position
from projection.keys import DEFAULT_GENERATION, READY, Generations, KeySpace, current_name
from serving.models import ID_PATTERN

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
    return v.decode(errors="replace") if isinstance(v, bytes) else v


def _member(v: bytes | str) -> str:
    """A set or sorted-set member as text (undecodable bytes replaced: the id check then refuses it)."""
    return v.decode(errors="replace") if isinstance(v, bytes) else v


UNREADABLE_MARK = "\x00atp:unreadable"  # a pair the script puts in place of a key it could not read


def position_of(raw: Any) -> dict[str, Any] | Unreadable | None:
    """A stored position as the API serves it: None for a missing key, ``Unreadable`` for a key whose
    record cannot be served (one bad key never fails the others read with it). ``raw`` is a dict
    (HGETALL), a flat list (HGETALL inside the script) or the error a pipeline returned for it."""
    if isinstance(raw, Exception):
        return Unreadable(f"not a position hash: {raw}")
    if not raw:
        return None
    if isinstance(raw, list):
        it = iter(raw)
        pairs: Any = list(zip(it, it))
        if pairs and _text(pairs[0][0]) == UNREADABLE_MARK:
            return Unreadable(f"not a position hash: {_text(pairs[0][1])}")
    else:
        pairs = raw.items()
    try:
        return read_position(pairs)
    except Unreadable as exc:
        return exc


def _ok(result: Any) -> Any:
    """A pipeline's result, or its error raised."""
    if isinstance(result, Exception):
        raise result
    return result


def _parsed(parse: Callable[[Any], Any], body: Any, label: Any) -> tuple[Any, Any]:
    """``(label, parse(body))``, or ``(label, Unreadable)`` when the stored body cannot be served."""
    if isinstance(body, Exception):
        return label, Unreadable(f"not an alert hash: {body}")
    try:
        return label, parse(body)
    except Unreadable as exc:
        return label, exc


ID = re.compile(ID_PATTERN)


def retired(retire_at: Any, now_ms: float) -> bool:
    """A generation's ``retire_at`` has passed (a value that is not a number retires nothing)."""
    try:
        return bool(retire_at) and int(retire_at) <= now_ms
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class Read:
    generation: str
    results: list[Any]
    watermark: int | None = None  # the generation's pipeline watermark (epoch ms; dataflows.runtime.watermark)


def _watermark(raw: Any) -> int | None:
    """The meta's ``watermark`` as epoch ms, or None (absent, or not a number a datetime can hold)."""
    try:
        ms = int(raw)
    except (TypeError, ValueError):
        return None
    return ms if 0 <= ms <= MAX_EPOCH_MS else None


Build = Callable[[Any, KeySpace], None]


# Positions in one command: the pointer, the generation's meta and each position, as ``_read``'s
# pipeline reads them. For one key, one command instead of three took 58 instead of 100 us of the
# API's CPU per read; the single-key reads that arrive together (many, under load) share one
# command, and a batch is one command instead of a pipeline of one per key. Not in Redis Cluster:
# the keys live in different slots there.
_READ_KEYS = """
local out = {redis.call('GET', KEYS[1]), redis.call('HMGET', KEYS[2], 'state', 'retire_at', 'watermark')}
for i = 3, #KEYS do
  local r = redis.pcall('HGETALL', KEYS[i])
  if r['err'] then r = {'\\0atp:unreadable', r['err']} end
  out[i] = r
end
return out
"""
MAX_COALESCED = 256  # keys of one script call; more reads of one turn take more calls

Fetched = tuple[Any, Any, Any, Any, list[Any]]  # (pointer, meta state, retire_at, watermark, results)


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
            pipe.hmget(ks.meta, "state", "retire_at", "watermark")
            build(pipe, ks)
            # A key of the wrong type fails its own result, not the read (position_of, _ok).
            pointer, meta, *results = await pipe.execute(raise_on_error=False)
            state, retire_at, watermark = _ok(meta)
            return _ok(pointer), state, retire_at, watermark, results

        return await self._checked(generation, explicit, pipelined)

    async def _checked(self, generation: str | None, explicit: bool, fetch: Callable[[KeySpace], Awaitable[Fetched]]) -> Read:
        for _ in range(3):
            name = generation or self._current
            pointer, state, retire_at, watermark, results = await fetch(self.gens.keyspace(name))
            if generation is None and current_name(pointer) != name:
                self._current = current_name(pointer)
                continue
            state = _text(state)
            if explicit and (state is None or retired(retire_at, time.time() * 1000)):
                raise UnknownGeneration(name, retired=state is not None)
            if state != READY:
                raise KeyspaceNotReady(state)
            return Read(name, results, _watermark(watermark))
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
            pointer, (state, retire_at, watermark), *flats = await self._read_keys(keys=keys)  # type: ignore[misc]
            return pointer, state, retire_at, watermark, [position_of(f) for f in flats]

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
                future.set_result(Read(read.generation, [result], read.watermark))

    async def get_many(self, pairs: list[tuple[str, str]], generation: str | None = None) -> Read:
        if self._read_keys is not None:
            return await self._checked(generation, generation is not None, self._scripted(pairs))

        def build(pipe: Any, ks: KeySpace) -> None:
            for sku, location in pairs:
                pipe.hgetall(ks.position(sku, location))

        read = await self._read(generation, build, explicit=generation is not None)
        return Read(read.generation, [position_of(raw) for raw in read.results], read.watermark)

    async def for_sku(self, sku: str, generation: str | None = None) -> Read:
        """``(location, position or Unreadable)`` of each location the SKU has a position at, sorted.
        A member of the SKU's location set that is not a location id is an ``Unreadable``."""
        read = await self._read(generation, lambda pipe, ks: pipe.smembers(ks.locations(sku)),
                                explicit=generation is not None)
        locations = sorted(_member(m) for m in _ok(read.results[0]))
        good = [loc for loc in locations if ID.fullmatch(loc)]
        # The second round trip reads the same generation and checks its meta again on purpose: a
        # loss between the two would otherwise give a partial SKU (wrong totals) instead of a 503.
        found = await self.get_many([(sku, loc) for loc in good], read.generation)
        out: list[tuple[str, Any]] = [(loc, p) for loc, p in zip(good, found.results) if p is not None]
        out += [(loc, Unreadable("the SKU's location set names no valid location"))
                for loc in locations if not ID.fullmatch(loc)]
        return Read(read.generation, out, found.watermark)

    async def for_group(self, sku: str, group: str, locations: list[str], generation: str | None = None) -> Read:
        """A group's position of ``sku`` (or None) followed by its members' positions, in one read."""
        def build(pipe: Any, ks: KeySpace) -> None:
            pipe.hgetall(ks.group(sku, group))
            for loc in locations:
                pipe.hgetall(ks.position(sku, loc))

        read = await self._read(generation, build, explicit=generation is not None)
        return Read(read.generation, [position_of(raw) for raw in read.results], read.watermark)

    async def explain(self, sku: str, location: str, generation: str | None = None) -> Read:
        """A key's position (None, or ``Unreadable``) and its lineage (``projection.codec.read_lineage``,
        newest first; ``Unreadable`` when it cannot be served), in one round trip."""
        def build(pipe: Any, ks: KeySpace) -> None:
            pipe.hgetall(ks.position(sku, location))
            pipe.lrange(ks.lineage(sku, location), 0, -1)

        read = await self._read(generation, build, explicit=generation is not None)
        raw_position, raw_lineage = read.results
        lineage: list[dict[str, Any]] | Unreadable
        try:
            if isinstance(raw_lineage, Exception):
                raise Unreadable(f"lineage: not a list: {raw_lineage}")
            lineage = read_lineage(raw_lineage)
        except Unreadable as exc:
            lineage = exc if exc.reason.startswith("lineage") else Unreadable(f"lineage: {exc.reason}")
        return Read(read.generation, [position_of(raw_position), lineage], read.watermark)

    async def alerts_of_key(self, sku: str, location: str, parse: Callable[[Any], Any],
                            generation: str | None = None) -> Read:
        """The latest alert of each kind for one key, ``parse``d (DRIFT first); an alert ``parse``
        refuses is an ``(kind, Unreadable)`` pair in its place."""
        read = await self._read(generation, lambda pipe, ks: pipe.hgetall(ks.alert(sku, location)),
                                explicit=generation is not None)
        stored = read.results[0]
        if isinstance(stored, Exception):
            return Read(read.generation, [(ALERT_KINDS[0], Unreadable(f"not an alert hash: {stored}"))])
        raw = {_text(k): v for k, v in stored.items()}
        return Read(read.generation, [_parsed(parse, raw[kind], kind) for kind in ALERT_KINDS if kind in raw])

    async def recent_alerts(self, location: str | None, parse: Callable[[Any], Any], accept: Callable[[Any], bool],
                            limit: int, generation: str | None = None) -> tuple[Read, list[tuple[str, Unreadable]]]:
        """The keys' latest alerts, newest ``as_of`` first, ``parse``d, that ``accept`` takes, at
        most ``limit``; and the index entries met on the way whose alert ``parse`` refused (at most
        ``limit``), as ``(index member, Unreadable)``: one bad alert never fails the listing."""
        out: list[Any] = []
        bad: list[tuple[str, Unreadable]] = []
        start, page = 0, max(limit, 100)
        name = generation
        while len(out) < limit:
            first, last = start, start + page - 1
            read = await self._read(name, lambda pipe, ks: pipe.zrevrange(ks.alerts(location), first, last),
                                    explicit=generation is not None)
            name = read.generation  # later pages read the same generation
            members = [_text(m) for m in _ok(read.results[0])]
            if not members:
                break
            ks = self.gens.keyspace(name)
            pipe = self.client.pipeline(transaction=False)
            read_members = []
            for m in members:
                kind, _, key = m.partition("|")  # type: ignore[union-attr]
                sku, _, loc = key.partition("@")
                if kind not in ALERT_KINDS or not ID.fullmatch(sku) or not ID.fullmatch(loc):
                    if len(bad) < limit:
                        bad.append((m, Unreadable("not an alert index entry (KIND|sku@location)")))  # type: ignore[arg-type]
                    continue
                read_members.append(m)
                pipe.hget(ks.alert(sku, loc), kind)
            for m, body in zip(read_members, await pipe.execute(raise_on_error=False) if read_members else []):
                if body is None:
                    continue
                alert = _parsed(parse, body, m)[1]
                if isinstance(alert, Unreadable):
                    if len(bad) < limit:
                        bad.append((m, alert))  # type: ignore[arg-type]
                elif accept(alert) and len(out) < limit:
                    out.append(alert)
            start += page
        return Read(name or self._current, out), bad

    async def check_ready(self) -> str:
        return (await self._read(None, lambda pipe, ks: None)).generation

    async def liveness(self, generation: str) -> tuple[str | None, str | None]:
        """The dataflow's ``flow`` and ``heartbeat`` from the generation's meta (None where absent)."""
        flow, heartbeat = await self.client.hmget(self.gens.keyspace(generation).meta, "flow", "heartbeat")
        return _text(flow), _text(heartbeat)

    async def ping(self) -> bool:
        return bool(await self.client.ping())
