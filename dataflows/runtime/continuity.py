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
| any             | retire time passed  | refuse: a switch retired this generation                       |

Also refused: a formula (``ATP_FORMULA_VERSION``) other than the generation's own, and running a
point-in-time generation live. A replay (``live=False``) creates its keyspace ``rebuilding``.

In cluster mode process 0 decides as above (it holds the recovery store, with one partition per
worker of the cluster) and the other processes follow the meta it writes (``follow_start``).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from core.config import Settings
from projection.generations import LIVE, PIT, SPEC_FILE, WAS_CURRENT_FILE, GenerationError, Spec, current, delete_matching, local_dirs, now_ms, read_meta, retire_due, write_meta
from dataflows.kafka import admin as kafka_admin
from dataflows.runtime.cluster import Board, Status
from dataflows.runtime.recovery import RecoveryError, RecoveryStore
from dataflows.runtime.crashguard import LEDGER_FILE, NOTE_FILE
from dataflows.republish import REPUBLISH
from projection.keys import READY, REBUILDING, DEFAULT_GENERATION, KeySpace
from projection.keys import generations_of, keyspace_of


log = logging.getLogger(__name__)

__all__ = ["KeyspaceWatch", "StartPlan", "beat", "follow_start", "plan_start", "read_meta", "reset", "write_meta"]

# Liveness for readiness (the API reads it): the meta hash's ``flow`` (running | stopped | crash_loop)
# and ``heartbeat`` (epoch ms, rewritten every watch interval while the flow runs). Only into an
# existing meta: a heartbeat must not re-create a lost keyspace's meta (that is how loss is seen).
RUNNING, STOPPED, CRASH_LOOP = "running", "stopped", "crash_loop"
_BEAT = "if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSET', KEYS[1], unpack(ARGV)) end return -1"


def beat(client: redis.Redis, ks: KeySpace, flow: str) -> bool:
    """Write ``flow`` and a fresh ``heartbeat`` into the keyspace's meta, if it exists."""
    return client.eval(_BEAT, 1, ks.meta, "flow", flow, "heartbeat", str(now_ms())) != -1


@dataclass(frozen=True)
class StartPlan:
    run_id: str
    republish: bool = False
    targets: dict[str, int] = field(default_factory=dict)  # input partition -> end offset at start
    expected_keys: int = 0  # keys the resume will build
    spec: Spec = field(default_factory=lambda: Spec(DEFAULT_GENERATION))


def _spec_for(settings: Settings, new: Spec | None, live: bool) -> Spec:
    """The generation's spec on disk, checked against what this start asks for; or the new one."""
    spec = Spec.load(settings.generation_dir)
    if spec is None:
        return new or Spec(settings.generation, LIVE, settings.formula_version or 1, created_ms=now_ms())
    if settings.formula_version is not None and settings.formula_version != spec.formula_version:
        raise GenerationError(
            f"generation '{spec.name}' computes ATP with formula {spec.formula_version}, but "
            f"ATP_FORMULA_VERSION={settings.formula_version}. A formula change needs a new generation: "
            f"`atp replay NAME --formula {settings.formula_version}`, then `atp generation switch NAME`.")
    if live and spec.kind == PIT:
        raise GenerationError(
            f"generation '{spec.name}' is a point-in-time rebuild and stays frozen; it cannot be run live. "
            "Read it with ?generation=, or drop it with `atp generation drop`.")
    return spec


def plan_start(settings: Settings, client: redis.Redis, new: Spec | None = None, live: bool = True) -> StartPlan:
    """Decide how this run starts (table above). ``new``: the spec of a generation `atp replay` creates;
    ``live=False``: a bounded replay, whose keyspace stays ``rebuilding`` until it has read its range."""
    ks = keyspace_of(settings)
    meta = read_meta(client, ks)
    name = settings.generation
    if retire_due(meta):
        raise GenerationError(
            f"generation '{name}' was retired (the API serves '{current(client, generations_of(settings))}'); start "
            "the dataflow with ATP_GENERATION set to the current generation, or drop this one")
    spec = _spec_for(settings, new, live)
    if not settings.recovery:
        # Without recovery every start re-reads the topics from the beginning; the keyspace fills
        # in as it goes and nothing can be re-published from state.
        if meta is None:
            write_meta(client, ks, "no-recovery", READY, spec)
        return StartPlan(meta["run_id"] if meta else "no-recovery", spec=spec)
    store = RecoveryStore(settings.recovery_dir)
    if not store.exists():
        if meta is not None and meta.get("run_id") != "no-recovery":
            raise RecoveryError(
                f"the Redis keyspace '{ks.prefix}' holds positions of run {meta.get('run_id')}, "
                f"but there is no recovery store in {settings.recovery_dir}. Starting from empty state would "
                "serve old positions until the whole log is re-read. Restore the directory, or run `atp reset` "
                "to clear both and rebuild from the beginning of the topics."
            )
        run_id = store.create(settings.workers_total)
        spec.save(settings.generation_dir)
        write_meta(client, ks, run_id, READY if live else REBUILDING, spec)
        return StartPlan(run_id, spec=spec)
    run_id = store.validate()
    if meta is not None and meta.get("run_id") != run_id:
        raise RecoveryError(
            f"the Redis keyspace '{ks.prefix}' belongs to run {meta.get('run_id')}, but the "
            f"recovery store in {settings.recovery_dir} is run {run_id}. Point ATP_STATE_DIR at that run's "
            "store, use another ATP_REDIS_KEY_PREFIX, or run `atp reset` to clear both."
        )
    if meta is not None and meta.get("state") == READY:
        return StartPlan(run_id, spec=spec)
    why = "was lost (no meta key)" if meta is None else "was being rebuilt when the dataflow stopped"
    log.warning("the Redis keyspace '%s' %s; re-publishing every position from the recovery store", ks.prefix, why)
    write_meta(client, ks, run_id, REBUILDING, spec)
    return StartPlan(run_id, True, kafka_admin.end_offsets(settings), store.state_keys(), spec)


def follow_start(settings: Settings, client: redis.Redis, interval_s: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep) -> StartPlan:
    """A process other than 0: wait for the keyspace meta process 0 writes, and start as it says."""
    waited = 0.0
    while True:
        meta = read_meta(client, keyspace_of(settings))
        if meta is not None and "run_id" in meta:
            break
        if waited % 10 < interval_s:
            log.info("waiting for process 0 to start the run (no meta in the Redis keyspace '%s' yet)",
                     keyspace_of(settings).prefix)
        sleep(interval_s)
        waited += interval_s
    spec = Spec(settings.generation, meta.get("kind", LIVE), int(meta.get("formula_version", 1)))
    return StartPlan(meta["run_id"], republish=meta.get("state") == REBUILDING, spec=spec)


class KeyspaceWatch(threading.Thread):
    """Runs beside the flow: notices a lost keyspace with no traffic to reveal it, marks a
    re-published keyspace ready once it is complete and caught up, restores the generation
    pointer Redis lost with it, and notices when a switch has retired this generation. In cluster
    mode it also exchanges this process's status with the others' (``board``). With ``flow`` it
    writes the heartbeat (docs/crash-loop.md); ``on_tick`` runs first in every round."""

    def __init__(self, client: redis.Redis, settings: Settings, plan: StartPlan, store: RecoveryStore | None,
                 interval_s: float = 0.5, mark_ready: bool = True, on_retire: Callable[[], None] = lambda: None,
                 board: Board | None = None, on_peer_lost: Callable[[list[int]], None] = lambda peers: None,
                 flow: Callable[[], str] | None = None, on_tick: Callable[[], None] = lambda: None) -> None:
        super().__init__(name="atp-keyspace-watch", daemon=True)
        self._client, self._plan, self._store, self._board = client, plan, store, board
        self._name, self._gens, self._ks = settings.generation, generations_of(settings), keyspace_of(settings)
        self._marker = settings.generation_dir / WAS_CURRENT_FILE
        self._interval = interval_s
        self._pending = plan.republish and mark_ready
        self._on_retire, self._on_peer_lost = on_retire, on_peer_lost
        self._flow, self._on_tick = flow, on_tick  # flow: the heartbeat's state (None: this process does not beat)
        self.stopped = threading.Event()

    def complete(self) -> bool:
        """Every resumed key written, and every event up to the restart's end offsets committed.

        Bytewax commits an epoch only after every sink has written it, so committed offsets at or
        past the targets mean the positions of all those events are in Redis.
        """
        if self._store is None:
            return False
        if self._board is not None:
            if not self._board.republished(self._plan.expected_keys):
                return False
        elif REPUBLISH.built < self._plan.expected_keys or REPUBLISH.keys:
            return False
        _, committed = self._store.committed_offsets()
        return all(committed.get(part, 0) >= end for part, end in self._plan.targets.items() if end > 0)

    def run(self) -> None:
        started = time.monotonic()
        while not self.stopped.wait(self._interval):
            try:
                self._on_tick()
            except Exception:  # noqa: BLE001 - the crash guard and the skip list must not stop the watch
                log.warning("crash-guard check failed", exc_info=True)
            try:
                meta = read_meta(self._client, self._ks)
                if meta is None or meta.get("run_id") != self._plan.run_id:
                    REPUBLISH.report_lost()
                    return
                if self._board is not None:
                    silent = self.exchange(self._board)
                    if silent:
                        self._on_peer_lost(silent)
                        return
                if retire_due(meta):
                    log.info("generation '%s' reached the end of its grace period after a switch; retiring", self._name)
                    self._on_retire()
                    return
                if self._pending and self.complete():
                    write_meta(self._client, self._ks, self._plan.run_id, READY, self._plan.spec)
                    self._pending = False
                    self.restore_pointer()
                    log.info("re-published %d positions; keyspace '%s' ready after %.1f s",
                             self._plan.expected_keys, self._ks.prefix, time.monotonic() - started)
                self.remember_pointer()
                if self._flow is not None:
                    beat(self._client, self._ks, self._flow())
            except (redis.exceptions.RedisError, OSError) as exc:
                log.debug("keyspace check failed (the sink retries writes): %s", exc)
                if self._board is not None:
                    self._board.forget()
            except Exception:  # noqa: BLE001 - the heartbeat and the loss watch must outlive bad data
                log.exception("keyspace check failed on what Redis holds; the watch goes on")

    @staticmethod
    def exchange(board: Board) -> list[int]:
        """Tell the cluster how far this process's re-publish is; returns the peers that went silent."""
        board.publish(Status(REPUBLISH.built, len(REPUBLISH.keys)))
        board.read()
        return board.silent()

    def remember_pointer(self) -> None:
        """Keep a local note of whether the API serves this generation, for after a Redis loss."""
        is_current = current(self._client, self._gens) == self._name
        if is_current != self._marker.exists():
            if is_current:
                self._marker.parent.mkdir(parents=True, exist_ok=True)
                self._marker.touch()
            else:
                self._marker.unlink(missing_ok=True)

    def restore_pointer(self) -> None:
        if self._name != DEFAULT_GENERATION and self._marker.exists():
            if self._client.set(self._gens.pointer, self._name, nx=True):
                log.warning("restored the lost generation pointer: the API serves '%s' again", self._name)


def reset(settings: Settings, client: redis.Redis) -> tuple[int, bool]:
    """Delete every generation's keyspace, the pointer and every recovery store; returns
    (Redis keys deleted, whether a recovery store existed)."""
    deleted = delete_matching(client, f"{settings.redis_key_prefix}:*")
    existed = False
    for directory in local_dirs(settings):
        existed = existed or directory.exists()
        shutil.rmtree(directory, ignore_errors=True)
    (settings.state_dir / SPEC_FILE).unlink(missing_ok=True)
    (settings.state_dir / WAS_CURRENT_FILE).unlink(missing_ok=True)
    for name in (LEDGER_FILE, NOTE_FILE):  # counted crashes belong to the deleted store; the skip list stays
        (settings.state_dir / name).unlink(missing_ok=True)
    return deleted, existed

