"""Start-up decisions that keep the Redis keyspace and the recovery store about the same run.

| recovery store  | Redis meta          | decision                                                       |
|-----------------|---------------------|----------------------------------------------------------------|
| absent          | absent              | new run: create the store, mark the keyspace ready             |
| absent          | present             | refuse: the keyspace belongs to a run whose state is gone      |
| damaged / mixed | any                 | refuse (``RecoveryError`` from the store)                      |
| run R           | absent              | Redis lost the keyspace: re-publish every position             |
| run R           | run R, rebuilding   | an interrupted re-publish: re-publish again                    |
| run R           | run R, ready        | resume                                                         |
| run R           | another run         | refuse                                                         |
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass, field

import redis

from atp.config import Settings
from dataflows import kafka_io
from dataflows.recovery import RecoveryError, RecoveryStore
from dataflows.republish import REPUBLISH
from state.projection import READY, REBUILDING, KeySpace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StartPlan:
    run_id: str
    republish: bool = False
    targets: dict[str, int] = field(default_factory=dict)  # input partition -> end offset at start
    expected_keys: int = 0  # keys the resume will build


def read_meta(client: redis.Redis, ks: KeySpace) -> dict[str, str] | None:
    raw = client.hgetall(ks.meta)
    return {k.decode(): v.decode() for k, v in raw.items()} if raw else None


def write_meta(client: redis.Redis, ks: KeySpace, run_id: str, state: str) -> None:
    client.hset(ks.meta, mapping={"run_id": run_id, "state": state, "since": int(time.time() * 1000)})


def plan_start(settings: Settings, client: redis.Redis) -> StartPlan:
    ks = KeySpace(settings.redis_key_prefix)
    meta = read_meta(client, ks)
    if not settings.recovery:
        # Without recovery every start re-reads the topics from the beginning; the keyspace fills
        # in as it goes and nothing can be re-published from state.
        if meta is None:
            write_meta(client, ks, "no-recovery", READY)
        return StartPlan(meta["run_id"] if meta else "no-recovery")
    store = RecoveryStore(settings.recovery_dir)
    if not store.exists():
        if meta is not None and meta.get("run_id") != "no-recovery":
            raise RecoveryError(
                f"the Redis keyspace '{settings.redis_key_prefix}' holds positions of run {meta.get('run_id')}, "
                f"but there is no recovery store in {settings.recovery_dir}. Starting from empty state would "
                "serve old positions until the whole log is re-read. Restore the directory, or run `atp reset` "
                "to clear both and rebuild from the beginning of the topics."
            )
        run_id = store.create(settings.workers)
        write_meta(client, ks, run_id, READY)
        return StartPlan(run_id)
    run_id = store.validate()
    if meta is not None and meta.get("run_id") != run_id:
        raise RecoveryError(
            f"the Redis keyspace '{settings.redis_key_prefix}' belongs to run {meta.get('run_id')}, but the "
            f"recovery store in {settings.recovery_dir} is run {run_id}. Point ATP_STATE_DIR at that run's "
            "store, use another ATP_REDIS_KEY_PREFIX, or run `atp reset` to clear both."
        )
    if meta is not None and meta.get("state") == READY:
        return StartPlan(run_id)
    why = "was lost (no meta key)" if meta is None else "was being re-published when the dataflow stopped"
    log.warning("the Redis keyspace '%s' %s; re-publishing every position from the recovery store",
                settings.redis_key_prefix, why)
    write_meta(client, ks, run_id, REBUILDING)
    return StartPlan(run_id, True, kafka_io.end_offsets(settings), store.state_keys())


class KeyspaceWatch(threading.Thread):
    """Runs beside the flow: notices a lost keyspace with no traffic to reveal it, and marks a
    re-published keyspace ready once it is complete and caught up."""

    def __init__(self, client: redis.Redis, ks: KeySpace, plan: StartPlan, store: RecoveryStore | None,
                 interval_s: float = 0.5) -> None:
        super().__init__(name="atp-keyspace-watch", daemon=True)
        self._client, self._ks, self._plan, self._store = client, ks, plan, store
        self._interval = interval_s
        self._pending = plan.republish
        self.stopped = threading.Event()

    def complete(self) -> bool:
        """Every resumed key written, and every event up to the restart's end offsets committed.

        Bytewax commits an epoch only after every sink has written it, so committed offsets at or
        past the targets mean the positions of all those events are in Redis.
        """
        if REPUBLISH.built < self._plan.expected_keys or REPUBLISH.keys or self._store is None:
            return False
        _, committed = self._store.committed_offsets()
        return all(committed.get(part, 0) >= end for part, end in self._plan.targets.items() if end > 0)

    def run(self) -> None:
        started = time.monotonic()
        while not self.stopped.wait(self._interval):
            try:
                meta = read_meta(self._client, self._ks)
                if meta is None or meta.get("run_id") != self._plan.run_id:
                    REPUBLISH.report_lost()
                    return
                if self._pending and self.complete():
                    write_meta(self._client, self._ks, self._plan.run_id, READY)
                    self._pending = False
                    log.info("re-published %d positions; keyspace '%s' ready after %.1f s",
                             self._plan.expected_keys, self._ks.prefix, time.monotonic() - started)
            except (redis.exceptions.RedisError, OSError) as exc:
                log.debug("keyspace check failed (the sink retries writes): %s", exc)


def reset(settings: Settings, client: redis.Redis) -> tuple[int, bool]:
    """Delete the keyspace and the recovery store; returns (Redis keys deleted, store removed)."""
    deleted = 0
    pipe = client.pipeline(transaction=False)  # one DEL per key: keys may live in different cluster slots
    for key in client.scan_iter(match=f"{settings.redis_key_prefix}:*", count=1000):
        pipe.delete(key)
        if len(pipe) >= 1000:
            deleted += sum(pipe.execute())
    deleted += sum(pipe.execute())
    existed = settings.recovery_dir.exists()
    shutil.rmtree(settings.recovery_dir, ignore_errors=True)
    return deleted, existed
