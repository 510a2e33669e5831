"""Bytewax sink writing positions to Redis: one pipeline per batch, coalesced, version-guarded."""

from __future__ import annotations

import logging
import time

import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from dataflows import metrics
from dataflows.republish import REPUBLISH
from state.position import Position
from state.projection import GUARDED_WRITE, KeySpace, write_args

log = logging.getLogger(__name__)


class RedisPositionSink(DynamicSink[Position]):
    """Each worker writes its own positions (keys never overlap between workers)."""

    def __init__(self, url: str, keyspace: KeySpace, retry_for_s: float = 120.0) -> None:
        self._url = url
        self._keyspace = keyspace
        self._retry_for_s = retry_for_s

    def build(self, step_id: str, worker_index: int, worker_count: int) -> "_RedisPartition":
        client = redis.Redis.from_url(self._url, socket_timeout=10, socket_connect_timeout=5)
        return _RedisPartition(client, self._keyspace, self._retry_for_s)


class _RedisPartition(StatelessSinkPartition[Position]):
    def __init__(self, client: redis.Redis, keyspace: KeySpace, retry_for_s: float) -> None:
        self._client = client
        self._ks = keyspace
        self._retry_for_s = retry_for_s
        self._sha = client.script_load(GUARDED_WRITE)

    def write_batch(self, items: list[Position]) -> None:
        latest: dict[str, Position] = {}
        for p in items:  # last (highest version) wins inside a batch
            cur = latest.get(p.key)
            if cur is None or p.version > cur.version:
                latest[p.key] = p
        started = time.perf_counter()
        deadline = time.monotonic() + self._retry_for_s
        delay = 0.05
        while True:
            try:
                self._write(latest.values())
                break
            except redis.exceptions.NoScriptError:
                self._sha = self._client.script_load(GUARDED_WRITE)  # Redis restarted: reload once
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError) as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"Redis unreachable for {self._retry_for_s:.0f} s ({exc}); the dataflow stops and, "
                        "restarted with recovery, resumes from its last snapshot"
                    ) from exc
                log.warning("redis write failed, retrying in %.2f s: %s", delay, exc)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        metrics.REDIS_WRITE.observe(time.perf_counter() - started)
        metrics.PUBLISHED.inc(len(latest))
        if REPUBLISH.keys:
            REPUBLISH.written(list(latest))

    def _write(self, positions: object) -> None:
        pipe = self._client.pipeline(transaction=False)
        ks, sha = self._ks, self._sha
        pipe.exists(ks.meta)  # first, so a lost keyspace is seen before this batch counts as written
        for p in positions:  # type: ignore[attr-defined]
            pipe.evalsha(sha, 2, ks.position(p.sku, p.location), ks.locations(p.sku), *write_args(p))
        if not pipe.execute()[0]:
            # Not an exception: the flow stops through the same clean path as Ctrl-C (one
            # interrupt, whoever notices first), and `atp run` restarts it to re-publish.
            log.warning("the Redis keyspace '%s' is gone (no %s): Redis restarted without persistence or "
                        "was flushed", ks.prefix, ks.meta)
            REPUBLISH.report_lost()

    def close(self) -> None:
        self._client.close()
