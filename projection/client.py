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


def security_options(settings: Settings) -> dict[str, Any]:
    """The TLS files (``rediss://``) and the password file of the settings as redis-py options.

    A user and password in ``ATP_REDIS_URL`` win over these (redis-py lets the URL's parts override).
    """
    out: dict[str, Any] = {}
    if settings.redis_url.startswith("rediss://"):
        out["ssl_check_hostname"] = True  # redis-py 5 did not check it by default
    if settings.redis_tls_ca_file is not None:
        out["ssl_ca_certs"] = str(settings.redis_tls_ca_file)
    if settings.redis_tls_cert_file is not None:
        out["ssl_certfile"] = str(settings.redis_tls_cert_file)
        out["ssl_keyfile"] = str(settings.redis_tls_key_file)
    if settings.redis_password_file is not None:
        out["password"] = settings.redis_password_file.read_text().rstrip("\r\n")
    return out


def connect(settings: Settings, **options: Any) -> redis.Redis:
    """A synchronous client; ``options`` are redis-py connection options (timeouts)."""
    return connect_url(settings.redis_url, settings.redis_cluster, **security_options(settings), **options)


def connect_url(url: str, cluster: bool, **options: Any) -> redis.Redis:
    if cluster:
        # redis-py types the cluster client apart; it answers every command the project sends (see above).
        return RedisCluster.from_url(url, **options)  # type: ignore[return-value]
    return redis.Redis.from_url(url, **options)


def connect_async(settings: Settings, **options: Any) -> aioredis.Redis:
    if settings.redis_cluster:
        options.pop("max_connections", None)  # per node in a cluster client; its default suits
        return AsyncRedisCluster.from_url(settings.redis_url, **security_options(settings),  # type: ignore[return-value]
                                          **options)  # as above
    return aioredis.Redis.from_url(settings.redis_url, **security_options(settings), **options)
