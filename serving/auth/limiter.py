"""Each key's rate, held across every API worker: a token bucket in Redis, leased out in small lots.

The bucket of a key is a hash (``<prefix>:ratelimit:<key>``: tokens, last refill in ms) changed by
one Lua script, so workers (``ATP_API_WORKERS``) and several API hosts share it exactly. Time is
Redis's own (``TIME``), so API hosts with skewed clocks agree. A request costs 1; a batch query
costs its number of items.

A round trip to Redis for every request halved the single-key read rate (loadtest/reports/
auth-cost.md), so a worker takes tokens in lots: up to a tenth of a second's rate (at most a quarter
of the burst, at least the request's cost) per trip, spent locally, and a lot's tokens not spent
within a second are dropped. Tokens only ever leave the bucket, so no key gets more than its rate
and burst over all workers together; a worker can refuse a little early while another holds a lot.
When Redis cannot be reached the request is let through: the read itself needs Redis and will
answer 503.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any

import redis.exceptions

from serving.auth import ApiKey

_BUCKET = """
local rate, burst, cost, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(v[1]), tonumber(v[2])
if tokens == nil or at == nil then tokens, at = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local granted = 0
if tokens >= cost then granted = math.max(cost, math.min(want, math.floor(tokens))) end
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {granted, tostring(tokens)}
"""


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    limit: int  # the bucket's size
    remaining: int  # whole requests left now
    reset_s: int  # seconds until the bucket is full again
    retry_after_s: int  # when refused: seconds until ``cost`` fits

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The IETF RateLimit headers (draft-ietf-httpapi-ratelimit-headers: limit, remaining, reset)."""
        out = [(b"ratelimit-limit", str(self.limit).encode()), (b"ratelimit-remaining", str(self.remaining).encode()),
               (b"ratelimit-reset", str(self.reset_s).encode())]
        if not self.allowed:
            out.append((b"retry-after", str(self.retry_after_s).encode()))
        return out


LAST_USED_EVERY_S = 60.0  # how often a worker records that a key was used
LEASE_S = 1.0  # a lot's unspent tokens are dropped after this


def lot_size(key: ApiKey) -> int:
    """Tokens a worker takes per trip to Redis: a tenth of a second's rate, at most a quarter of the burst."""
    return max(1, int(min(key.rate / 10, key.burst / 4)))


@dataclass(slots=True)
class _Lot:
    left: float
    until: float  # monotonic
    bucket: float  # what the bucket held after the lot was taken (for RateLimit-Remaining)


def last_used_key(prefix: str) -> str:
    """The hash of each key's last use (epoch ms), which ``atp keys list`` shows."""
    return f"{prefix}:keys:last_used"


class Limiter:
    """Holds each key to its rate, and notes (at most once a minute per worker) when it was last used."""

    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self._script = client.register_script(_BUCKET)
        self._prefix = prefix
        self._noted: dict[str, float] = {}
        self._lots: dict[str, _Lot] = {}
        self._fetching: dict[str, asyncio.Future[None]] = {}

    async def note_use(self, key: ApiKey) -> None:
        now = time.time()
        if now - self._noted.get(key.name, 0.0) < LAST_USED_EVERY_S:
            return
        self._noted[key.name] = now
        try:
            await self._client.hset(last_used_key(self._prefix), key.name, int(now * 1000))
        except redis.exceptions.RedisError:
            pass  # a convenience for `atp keys list`; the read itself says when Redis is away

    async def take(self, key: ApiKey, cost: int = 1) -> Verdict | None:
        """The verdict for ``cost`` requests now, or None for a key without a rate (or Redis away).

        One trip to Redis per key at a time in a worker: requests that find the lot spent while a
        trip is under way wait for its lot instead of each fetching (and stranding) one."""
        if key.rate <= 0:
            return None
        while True:
            lot = self._lots.get(key.name)
            if lot is not None and lot.until > time.monotonic() and lot.left >= cost:
                lot.left -= cost
                return self._verdict(key, True, lot.bucket + lot.left, cost)
            pending = self._fetching.get(key.name)
            if pending is None:
                break
            await asyncio.shield(pending)  # then look at the lot it brought
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._fetching[key.name] = done
        try:
            return await self._fetch(key, cost)
        finally:
            if self._fetching.get(key.name) is done:
                del self._fetching[key.name]
            done.set_result(None)

    async def _fetch(self, key: ApiKey, cost: int) -> Verdict | None:
        try:
            granted, tokens = await self._script(keys=[f"{self._prefix}:ratelimit:{key.name}"],
                                                 args=[key.rate, key.burst, cost, max(cost, lot_size(key))])
        except redis.exceptions.RedisError:
            return None
        bucket, got = float(tokens), int(granted)
        now = time.monotonic()
        old = self._lots.get(key.name)
        kept = old.left if old is not None and old.until > now else 0.0  # taken from the bucket already
        if got < cost:
            return self._verdict(key, False, bucket + kept, cost)
        self._lots[key.name] = _Lot(kept + got - cost, now + LEASE_S, bucket)
        return self._verdict(key, True, bucket + kept + got - cost, cost)

    @staticmethod
    def _verdict(key: ApiKey, allowed: bool, left: float, cost: int) -> Verdict:
        retry = 0 if allowed else max(1, math.ceil((cost - left) / key.rate))
        return Verdict(allowed, int(key.burst), int(left), math.ceil(max(0.0, key.burst - left) / key.rate), retry)
