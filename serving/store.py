"""Reading positions from Redis (the projection written by the dataflow)."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from state.projection import READY, KeySpace, from_hash


class KeyspaceNotReady(Exception):
    """The keyspace is lost, never written, or being re-published: its numbers must not be served."""

    def __init__(self, state: str | None) -> None:
        self.state = state or "missing"
        super().__init__(
            "the position store is being re-published after a Redis loss; retry shortly"
            if state else "the position store holds no keyspace (Redis lost it, or the dataflow never ran); "
            "the dataflow re-publishes it when it runs"
        )


def _checked(state: bytes | str | None) -> None:
    state = state.decode() if isinstance(state, bytes) else state
    if state != READY:
        raise KeyspaceNotReady(state)


class PositionStore:
    """Every read checks, in the same round trip, that the keyspace is complete (its meta says ready)."""

    def __init__(self, client: aioredis.Redis, keyspace: KeySpace) -> None:
        self.client = client
        self.ks = keyspace

    async def get(self, sku: str, location: str) -> dict[str, Any] | None:
        return (await self.get_many([(sku, location)]))[0]

    async def get_many(self, pairs: list[tuple[str, str]]) -> list[dict[str, Any] | None]:
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(self.ks.meta, "state")
        for sku, location in pairs:
            pipe.hgetall(self.ks.position(sku, location))
        state, *raws = await pipe.execute()
        _checked(state)
        return [from_hash(raw) for raw in raws]

    async def for_sku(self, sku: str) -> list[dict[str, Any]]:
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(self.ks.meta, "state")
        pipe.smembers(self.ks.locations(sku))
        state, members = await pipe.execute()
        _checked(state)
        locations = sorted(m.decode() if isinstance(m, bytes) else m for m in members)
        # get_many checks the meta again on purpose: a loss between the two round trips would
        # otherwise give a partial SKU (wrong totals) instead of a 503.
        found = await self.get_many([(sku, loc) for loc in locations])
        return [p for p in found if p is not None]

    async def check_ready(self) -> None:
        _checked(await self.client.hget(self.ks.meta, "state"))

    async def ping(self) -> bool:
        return bool(await self.client.ping())
