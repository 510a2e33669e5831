"""Reading positions from Redis (the projection written by the dataflow)."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from state.projection import KeySpace, from_hash


class PositionStore:
    def __init__(self, client: aioredis.Redis, keyspace: KeySpace) -> None:
        self.client = client
        self.ks = keyspace

    async def get(self, sku: str, location: str) -> dict[str, Any] | None:
        return from_hash(await self.client.hgetall(self.ks.position(sku, location)))

    async def get_many(self, pairs: list[tuple[str, str]]) -> list[dict[str, Any] | None]:
        pipe = self.client.pipeline(transaction=False)
        for sku, location in pairs:
            pipe.hgetall(self.ks.position(sku, location))
        return [from_hash(raw) for raw in await pipe.execute()]

    async def for_sku(self, sku: str) -> list[dict[str, Any]]:
        members = await self.client.smembers(self.ks.locations(sku))
        locations = sorted(m.decode() if isinstance(m, bytes) else m for m in members)
        found = await self.get_many([(sku, loc) for loc in locations])
        return [p for p in found if p is not None]

    async def ping(self) -> bool:
        return bool(await self.client.ping())
