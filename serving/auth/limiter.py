"""Each key's rate, held across every API worker: a token bucket in Redis, one round trip a request.

The bucket of a key is a hash (``<prefix>:ratelimit:<key>``: tokens, last refill in ms) changed by
one Lua script, so workers (``ATP_API_WORKERS``) and several API hosts share it exactly. Time is
Redis's own (``TIME``), so API hosts with skewed clocks agree. A request costs 1; a batch query
costs its number of items. When Redis cannot be reached the request is let through: the read
itself needs Redis and will answer 503.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import redis.exceptions

from serving.auth import ApiKey

_BUCKET = """
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(v[1]), tonumber(v[2])
if tokens == nil or at == nil then tokens, at = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local ok = 0
if tokens >= cost then tokens = tokens - cost; ok = 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {ok, tostring(tokens)}
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
        """The verdict for ``cost`` requests now, or None for a key without a rate (or Redis away)."""
        if key.rate <= 0:
            return None
        try:
            ok, tokens = await self._script(keys=[f"{self._prefix}:ratelimit:{key.name}"],
                                            args=[key.rate, key.burst, cost])
        except redis.exceptions.RedisError:
            return None
        left = float(tokens)
        allowed = bool(int(ok))
        retry = 0 if allowed else max(1, math.ceil((cost - left) / key.rate)) if cost <= key.burst else 0
        return Verdict(allowed, int(key.burst), int(left), math.ceil((key.burst - left) / key.rate), retry)
