"""Redis clients for a single server or a Redis Cluster (``ATP_REDIS_CLUSTER=true``), one place.

Every multi-key command of the project stays inside one hash slot (a SKU's keys share the
``{sku}`` tag), pipelines are never transactions, and SCAN-based deletes go key by key, so the
same code runs against both; a cluster client routes each command to the node owning its slot.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from core.config import Settings


def connect(settings: Settings, **options: Any) -> redis.Redis:
    """A synchronous client; ``options`` are redis-py connection options (timeouts)."""
    return connect_url(settings.redis_url, settings.redis_cluster, **options)


def connect_url(url: str, cluster: bool, **options: Any) -> redis.Redis:
    if cluster:
        return RedisCluster.from_url(url, **options)  # type: ignore[return-value]
    return redis.Redis.from_url(url, **options)


def connect_async(settings: Settings, **options: Any) -> aioredis.Redis:
    if settings.redis_cluster:
        options.pop("max_connections", None)  # per node in a cluster client; its default suits
        return AsyncRedisCluster.from_url(settings.redis_url, **options)  # type: ignore[return-value]
    return aioredis.Redis.from_url(settings.redis_url, **options)
