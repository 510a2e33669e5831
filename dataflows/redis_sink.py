"""Bytewax sink writing positions and alerts to Redis: one pipeline per batch, coalesced,
version-guarded (so at-least-once delivery is harmless)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from dataflows import metrics
from dataflows.republish import REPUBLISH
from projection.client import connect_url
from projection.codec import lineage_arg, write_args
from projection.keys import KeySpace
from projection.scripts import ALERT_INDEX_SIZE, GUARDED_ALERT, GUARDED_WRITE, WRITE_CHUNK, alert_member
from state.drift import Alert
from state.fold import Entry
from state.groups import GroupPosition
from state.position import Position

log = logging.getLogger(__name__)

# One GUARDED_WRITE item: the SKU, the hash's key, its index's key, its lineage list's key, then
# write_args, the members and the lineage.
_Item = tuple[str, str, str, str, int, str, str, str, str]


class Lineage:
    """The changes behind the positions the fold step emits, handed to this sink (the sink of the
    worker that folded them, in the same process: positions are not exchanged between workers).

    A Position is a fixed record (its fields are the hash's and the feed's), so the changes travel
    beside it: the fold adds a key's new history entries when its batch is accepted (an effect,
    so a refused batch adds none), the sink takes them with the key's position. Collected only
    while a Redis sink is built (tests and benchmarks with other sinks collect nothing)."""

    __slots__ = ("enabled", "pending")

    def __init__(self) -> None:
        self.enabled = False
        self.pending: dict[str, list[Entry]] = {}

    def add(self, item: tuple[str, list[Entry]]) -> None:
        key, entries = item
        got = self.pending.get(key)
        if got is None:
            self.pending[key] = entries
        else:
            got += entries

    def take(self, key: str) -> str:
        """The key's changes since it was last taken, as ``GUARDED_WRITE``'s argument ("" none)."""
        entries = self.pending.pop(key, None)
        return lineage_arg(entries) if entries else ""


LINEAGE = Lineage()


_OUTAGE_REPLIES = ("READONLY", "OOM", "MISCONF", "NOPERM", "NOAUTH", "LOADING", "MASTERDOWN", "CLUSTERDOWN",
                   "TRYAGAIN", "BUSY")


def _outage(exc: redis.exceptions.RedisError) -> bool:
    """Redis unreachable, or refusing every write for now: waited for. Anything else (WRONGTYPE, a
    script error on a corrupt key) will not pass by waiting."""
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                        redis.exceptions.BusyLoadingError, redis.exceptions.ReadOnlyError,
                        redis.exceptions.AuthenticationError, redis.exceptions.NoPermissionError,
                        redis.exceptions.OutOfMemoryError)):
        return True
    text = str(exc)
    return any(reply in text for reply in _OUTAGE_REPLIES)


class RedisPositionSink(DynamicSink[Position | Alert | GroupPosition]):
    """Each worker writes its own positions (keys never overlap between workers)."""

    def __init__(self, url: str, keyspace: KeySpace, retry_for_s: float = 120.0, cluster: bool = False,
                 options: dict[str, Any] | None = None) -> None:
        """``options``: more redis-py connection options (``projection.client.security_options``)."""
        self._url = url
        self._options = options or {}
        self._keyspace = keyspace
        self._retry_for_s = retry_for_s
        self._cluster = cluster

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RedisPartition:
        client = connect_url(self._url, self._cluster, socket_timeout=10, socket_connect_timeout=5, **self._options)
        LINEAGE.enabled = True
        return _RedisPartition(client, self._keyspace, self._retry_for_s, self._cluster)


class _RedisPartition(StatelessSinkPartition[Position | Alert | GroupPosition]):
    def __init__(self, client: redis.Redis, keyspace: KeySpace, retry_for_s: float, cluster: bool = False) -> None:
        self._client = client
        self._cluster = cluster
        self._ks = keyspace
        self._retry_for_s = retry_for_s
        self._load_scripts()

    def _load_scripts(self) -> None:
        self._sha = self._client.script_load(GUARDED_WRITE)
        self._alert_sha = self._client.script_load(GUARDED_ALERT)

    def write_batch(self, items: list[Position | Alert | GroupPosition]) -> None:
        latest: dict[str, Position] = {}
        groups: dict[str, GroupPosition] = {}
        alerts: list[Alert] = []
        for p in items:  # last (highest version) wins inside a batch
            if type(p) is Position:
                cur = latest.get(p.key)
                if cur is None or p.version > cur.version:
                    latest[p.key] = p
            elif type(p) is GroupPosition:
                g = groups.get(p.key)
                if g is None or p.position.version > g.position.version:
                    groups[p.key] = p
            else:
                alerts.append(p)
        # Taken once, before any retry: a write that is retried sends the same changes.
        lineage = {key: LINEAGE.take(key) for key in latest} if LINEAGE.pending else {}
        started = time.perf_counter()
        deadline = time.monotonic() + self._retry_for_s
        delay = 0.05
        while True:
            try:
                self._write(latest.values(), groups.values(), alerts, lineage)
                break
            except redis.exceptions.NoScriptError:
                self._load_scripts()  # Redis restarted: reload once
            except redis.exceptions.RedisError as exc:
                if not _outage(exc):
                    # Not an outage and not a record's: a key of this keyspace Redis cannot update (a
                    # hand edit left another type there, or a version that is not a number).
                    raise RuntimeError(
                        f"Redis refused a write ({type(exc).__name__}: {exc}): a key of this keyspace is "
                        "corrupt; delete it (its next change writes it again) or rebuild the keyspace with "
                        "`atp replay` and `atp generation switch`") from exc
                # Unreachable, loading, or refusing writes (READONLY after a failover, OOM at
                # maxmemory, MISCONF after a failed save, an ACL change): an outage of Redis, waited
                # for. What is written is bounded by the contract, so no record can cause these.
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"Redis unreachable or refusing writes for {self._retry_for_s:.0f} s "
                        f"({type(exc).__name__}: {exc}); the dataflow stops and, "
                        "restarted with recovery, resumes from its last snapshot"
                    ) from exc
                log.warning("redis write failed, retrying in %.2f s: %s", delay, exc)
                metrics.loop_beat()  # an outage waited for is no hang
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        metrics.REDIS_WRITE.observe(time.perf_counter() - started)
        metrics.PUBLISHED.inc(len(latest))
        if REPUBLISH.keys:
            REPUBLISH.written(list(latest))

    def _write(self, positions: Iterable[Position], groups: Iterable[GroupPosition], alerts: list[Alert],
               lineage: dict[str, str]) -> None:
        pipe = self._client.pipeline(transaction=False)
        ks, sha = self._ks, self._sha
        pipe.exists(ks.meta)  # first, so a lost keyspace is seen before this batch counts as written
        items: list[_Item] = [(p.sku, ks.position(p.sku, p.location), ks.locations(p.sku),
                               ks.lineage(p.sku, p.location), *write_args(p), "", lineage.get(p.key, ""))
                              for p in positions]
        for g in groups:
            p = g.position
            group_key = ks.group(p.sku, g.group)  # a group has no lineage: its own key stands in, never written
            items.append((p.sku, group_key, ks.groups(p.sku), group_key, *write_args(p),
                          json.dumps(g.members, separators=(",", ":")), ""))
        for chunk in self._chunks(items):
            keys = [k for item in chunk for k in item[1:4]]
            # execute_command: redis-py's cluster pipeline refuses .evalsha() but routes EVALSHA by its keys.
            pipe.execute_command("EVALSHA", sha, len(keys), *keys, *(a for item in chunk for a in item[4:]))
        for a in alerts:
            # Single-key commands only (Redis Cluster): the guarded hash, then both indexes.
            # ZADD GT keeps an entry's newest as_of, so a re-delivered alert never moves it back.
            pipe.execute_command("EVALSHA", self._alert_sha, 1, ks.alert(a.sku, a.location), a.kind, a.version,
                                 json.dumps(a.as_dict(), separators=(",", ":")))
            member = alert_member(a.kind, a.sku, a.location)
            for index in (ks.alerts(), ks.alerts(a.location)):
                pipe.zadd(index, {member: a.as_of}, gt=True)
        if alerts:
            for index in {ks.alerts(), *(ks.alerts(a.location) for a in alerts)}:
                pipe.zremrangebyrank(index, 0, -ALERT_INDEX_SIZE - 1)
        if not pipe.execute()[0]:
            # Not an exception: the flow stops through the same clean path as Ctrl-C (one
            # interrupt, whoever notices first), and `atp run` restarts it to re-publish.
            log.warning("the Redis keyspace '%s' is gone (no %s): Redis restarted without persistence or "
                        "was flushed", ks.prefix, ks.meta)
            REPUBLISH.report_lost()

    def _chunks(self, items: list[_Item]) -> Iterator[list[_Item]]:
        """Items per ``GUARDED_WRITE`` call. A Redis Cluster call must stay in one hash slot: one
        SKU's keys share the ``{sku}`` tag, so there a call carries one SKU's items."""
        if not self._cluster:
            for i in range(0, len(items), WRITE_CHUNK):
                yield items[i:i + WRITE_CHUNK]
            return
        by_sku: dict[str, list[_Item]] = {}
        for item in items:
            by_sku.setdefault(item[0], []).append(item)
        yield from by_sku.values()

    def close(self) -> None:
        self._client.close()
