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

While the flow runs, ``KeyspaceWatch`` writes the heartbeat with the read progress a live run
measures (``ReadProgress``: what `atp generation switch` requires), keeps a switch's retirement
time on disk too and restores it after a Redis loss, and retires the generation when it is due
(never while the pointer still names it).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from core.config import Settings
from dataflows import metrics
from dataflows.kafka import admin as kafka_admin
from dataflows.republish import REPUBLISH
from dataflows.runtime.cluster import Board, Status
from dataflows.runtime.crashguard import LEDGER_FILE, NOTE_FILE
from dataflows.runtime.recovery import RecoveryError, RecoveryStore
from projection.generations import (
    CAUGHT_UP_AT,
    LAG,
    LIVE,
    PIT,
    RETIRE_FILE,
    SPEC_FILE,
    WAS_CURRENT_FILE,
    GenerationError,
    Spec,
    current,
    delete_matching,
    load_retire_at,
    local_dirs,
    now_ms,
    read_meta,
    retire_due,
    save_retire_at,
    write_meta,
)
from projection.keys import DEFAULT_GENERATION, READY, REBUILDING, KeySpace, current_name, generations_of, keyspace_of

log = logging.getLogger(__name__)

__all__ = ["KeyspaceWatch", "ReadProgress", "StartPlan", "beat", "follow_start", "plan_start", "read_meta", "read_offsets",
           "reset", "write_meta"]

# Liveness for readiness (the API reads it): the meta hash's ``flow`` (running | stopped | crash_loop)
# and ``heartbeat`` (epoch ms, rewritten every watch interval while the flow runs). Only into an
# existing meta: a heartbeat must not re-create a lost keyspace's meta (that is how loss is seen).
RUNNING, STOPPED, CRASH_LOOP = "running", "stopped", "crash_loop"
_BEAT = "if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSET', KEYS[1], unpack(ARGV)) end return -1"


def beat(client: redis.Redis, ks: KeySpace, flow: str, caught_up_at: int | None = None, lag: int | None = None) -> bool:
    """Write ``flow``, a fresh ``heartbeat`` and the read progress (``caught_up_at``, ``lag``: ""
    when not measured, so no earlier run's figures outlive it) into the keyspace's meta, if it exists."""
    progress = ("" if caught_up_at is None else str(caught_up_at), "" if lag is None else str(lag))
    return client.eval(_BEAT, 1, ks.meta, "flow", flow, "heartbeat", str(now_ms()),
                       CAUGHT_UP_AT, progress[0], LAG, progress[1]) != -1


PROGRESS_EVERY_S = 5.0  # how often a live run measures its read progress (a consumer's round trips to the broker)


class ReadProgress(threading.Thread):
    """How far a live run has read its input (process 0), for `atp generation switch`.

    Every ``interval_s`` it takes the end of every input partition (``ends``), then what has been
    read (``read``: see ``read_offsets``). ``caught_up_at`` is the time of the newest measurement
    whose ends had all been read: every record logged before it had been read. It trails the truth
    by up to one interval plus the measurement's own time, never leads it. ``lag``: the records
    between what was read and the ends of the last measurement."""

    def __init__(self, ends: Callable[[], dict[str, int]], read: Callable[[], dict[str, int]],
                 interval_s: float = PROGRESS_EVERY_S, clock: Callable[[], int] = now_ms) -> None:
        super().__init__(name="atp-read-progress", daemon=True)
        self._ends, self._read, self._interval, self._clock = ends, read, interval_s, clock
        self._open: deque[tuple[int, dict[str, int]]] = deque(maxlen=64)  # measurements not yet read up to
        self.caught_up_at: int | None = None
        self.lag: int | None = None
        self.stopped = threading.Event()

    def measure(self) -> None:
        at = self._clock()
        ends = self._ends()
        read = self._read()  # after the ends: what was read by then counts
        self.lag = sum(max(0, end - read.get(part, 0)) for part, end in ends.items())
        self._open.append((at, ends))
        while self._open and all(read.get(part, 0) >= end for part, end in self._open[0][1].items()):
            self.caught_up_at = self._open.popleft()[0]

    def run(self) -> None:
        failed = False
        while True:
            try:
                self.measure()
            except Exception as exc:  # noqa: BLE001 - the broker away: no measurement, caught_up_at ages
                if not failed:
                    log.warning("could not measure how far the input was read (%s); retrying every %g s",
                                exc, self._interval)
                failed = True
            if self.stopped.wait(self._interval):
                return


def resumed_offsets(store: RecoveryStore | None) -> dict[str, int]:
    """Where the run resumes, per input partition: read from the recovery store once, before Bytewax
    starts (read progress and the watermark then follow what the decode step reads, which is newer)."""
    return dict(store.committed_offsets()[1]) if store is not None and store.exists() else {}


def read_offsets(resumed: dict[str, int]) -> dict[str, int]:
    """The next offset to read per input partition (``{index}-{topic}``): what this process's decode
    step has read (``atp_input_offset``), else where the run resumed (``resumed_offsets``; in cluster
    mode the other processes' partitions stay there)."""
    out = dict(resumed)
    for metric in metrics.INPUT_OFFSET.collect():
        for sample in metric.samples:
            part = f"{sample.labels['partition']}-{sample.labels['topic']}"
            out[part] = max(out.get(part, 0), int(sample.value))
    return out


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
    if retire_due(meta) and current(client, generations_of(settings)) != name:  # served still: the watch retires it
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
    pointer Redis lost with it, and notices when a switch has retired this generation (process 0
    keeps the retirement time on disk too, see ``keep_schedule``). In cluster mode it also
    exchanges this process's status with the others' (``board``). With ``flow`` it writes the
    heartbeat (docs/crash-loop.md), with ``progress``'s figures; ``on_tick`` runs first in every round."""

    def __init__(self, client: redis.Redis, settings: Settings, plan: StartPlan, store: RecoveryStore | None,
                 interval_s: float = 0.5, mark_ready: bool = True, on_retire: Callable[[], None] = lambda: None,
                 board: Board | None = None, on_peer_lost: Callable[[list[int]], None] = lambda peers: None,
                 flow: Callable[[], str] | None = None, on_tick: Callable[[], None] = lambda: None,
                 progress: ReadProgress | None = None) -> None:
        super().__init__(name="atp-keyspace-watch", daemon=True)
        self._client, self._plan, self._store, self._board = client, plan, store, board
        self._name, self._gens, self._ks = settings.generation, generations_of(settings), keyspace_of(settings)
        self._marker = settings.generation_dir / WAS_CURRENT_FILE
        self._schedule_dir = settings.generation_dir if settings.coordinator else None  # RETIRE_FILE's directory
        self._progress, self._waiting_pointer = progress, False
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
        if self._progress is not None:
            self._progress.start()
        try:
            self._watch()
        finally:
            if self._progress is not None:
                self._progress.stopped.set()

    def _watch(self) -> None:
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
                meta = self.keep_schedule(meta)
                if retire_due(meta) and self.may_retire():
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
                    progress = self._progress
                    beat(self._client, self._ks, self._flow(), progress.caught_up_at if progress else None,
                         progress.lag if progress else None)
            except (redis.exceptions.RedisError, OSError) as exc:
                log.debug("keyspace check failed (the sink retries writes): %s", exc)
                if self._board is not None:
                    self._board.forget()
            except Exception:  # noqa: BLE001 - the heartbeat and the loss watch must outlive bad data
                log.exception("keyspace check failed on what Redis holds; the watch goes on")

    def keep_schedule(self, meta: dict[str, str]) -> dict[str, str]:
        """Process 0 keeps the ``retire_at`` a switch wrote into the meta on disk too (``RETIRE_FILE``,
        beside the spec), and writes it back into a meta that lost it with Redis; returns the meta
        with it. The schedule reaches the disk within one watch interval of the switch."""
        if self._schedule_dir is None:
            return meta
        in_redis = meta.get("retire_at")
        if in_redis:
            if in_redis.isdigit() and load_retire_at(self._schedule_dir) != int(in_redis):
                save_retire_at(self._schedule_dir, int(in_redis))
            return meta
        kept = load_retire_at(self._schedule_dir)
        if kept is None:
            return meta
        if self._client.eval(_BEAT, 1, self._ks.meta, "retire_at", str(kept)) == -1:
            return meta  # the meta is gone again: the next round sees the loss
        log.warning("restored the retirement of generation '%s' at %d (epoch ms), lost with Redis, from %s",
                    self._name, kept, self._schedule_dir / RETIRE_FILE)
        return {**meta, "retire_at": str(kept)}

    def may_retire(self) -> bool:
        """A generation retires only once the pointer names another one: after a Redis loss the pointer
        is absent (``default`` served) until the new generation's dataflow restores it."""
        if current(self._client, self._gens) != self._name:
            return True
        if not self._waiting_pointer:
            self._waiting_pointer = True
            log.warning("generation '%s' is due to retire, but the API serves it (the pointer was lost?): it retires "
                        "once the pointer names another generation (its dataflow restores it after re-publishing, "
                        "or `atp generation switch NAME`)", self._name)
        return False

    @staticmethod
    def exchange(board: Board) -> list[int]:
        """Tell the cluster how far this process's re-publish is; returns the peers that went silent."""
        board.publish(Status(REPUBLISH.built, len(REPUBLISH.keys)))
        board.read()
        return board.silent()

    def remember_pointer(self) -> None:
        """Keep a local note of whether the API serves this generation, for after a Redis loss. An
        absent pointer says nothing (a switch always sets it): it may have been lost with Redis."""
        raw = self._client.get(self._gens.pointer)
        if raw is None:
            return
        is_current = current_name(raw) == self._name
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
    (settings.state_dir / RETIRE_FILE).unlink(missing_ok=True)
    for name in (LEDGER_FILE, NOTE_FILE):  # counted crashes belong to the deleted store; the skip list stays
        (settings.state_dir / name).unlink(missing_ok=True)
    return deleted, existed

