"""Run the dataflow in this process: start-up checks, metrics endpoint, recovery, Bytewax."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from types import FrameType

import redis
from bytewax.recovery import RecoveryConfig
from bytewax.run import cli_main
from prometheus_client import start_http_server

from core import gctune, memtrim, redact
from core.config import Settings
from core.errors import StackError
from dataflows import metrics
from dataflows.flow import production_flow
from dataflows.kafka import Bounds, topic_config
from dataflows.kafka import admin as kafka_admin
from dataflows.kafka.progress import STOCK_PROGRESS
from dataflows.republish import REPUBLISH
from dataflows.runtime.cluster import PEER_TIMEOUT_S, Board
from dataflows.runtime.continuity import (
    CRASH_LOOP,
    RUNNING,
    KeyspaceWatch,
    ReadProgress,
    StartPlan,
    beat,
    follow_start,
    plan_start,
    read_offsets,
    resumed_offsets,
)
from dataflows.runtime.continuity import STOPPED as FLOW_STOPPED
from dataflows.runtime.crashguard import CrashGuard, unread
from dataflows.runtime.panic import PanicHush
from dataflows.runtime.recovery import RecoveryStore
from dataflows.runtime.watermark import WatermarkWriter
from dataflows.skiplist import SKIP, SKIP_FILE
from projection.client import connect
from projection.generations import Spec, current, drop, write_meta
from projection.keys import READY, generations_of, keyspace_of

log = logging.getLogger(__name__)


def check_redis(settings: Settings, timeout_s: float = 5.0) -> None:
    url = settings.redis_url
    try:
        connect(settings, socket_connect_timeout=timeout_s, socket_timeout=timeout_s).ping()
    except (redis.exceptions.RedisError, ValueError) as exc:  # ValueError: a URL redis-py cannot parse
        raise StackError(
            f"cannot reach Redis at {redact.url(url)} ({redact.text(str(exc))}); start the local stack with "
            "`atp stack up` or set ATP_REDIS_URL"
        ) from None


def recovery_config(settings: Settings) -> RecoveryConfig | None:
    """Bytewax recovery partitions under the state dir (created and checked by ``plan_start``)."""
    if not settings.recovery:
        return None
    # In cluster mode the other processes may have none of the partitions (process 0 holds them);
    # Bytewax needs the cluster as a whole to reach each one, not every process.
    settings.recovery_dir.mkdir(parents=True, exist_ok=True)
    return RecoveryConfig(str(settings.recovery_dir), backup_interval=timedelta(0))


_stop_requested: list[str] = []
_retiring = threading.Event()
# Bytewax stops at its next activation when a Python signal handler raises. Raise once per run: a
# second exception while Bytewax unwinds the first one aborts the process.
_interrupting = threading.Event()

STOPPED, DONE, RETIRED, LOST = "stopped", "done", "retired", "lost"


@dataclass(frozen=True)
class Replay:
    """A bounded run into a new generation: read ``bounds`` and end there."""

    spec: Spec
    bounds: Bounds


_deferred: list[str] = []  # the reason of a stop that waits for Bytewax's next signal check


def _raise_once(why: str, frame: FrameType | None) -> None:
    """Stop the flow: raise KeyboardInterrupt where Bytewax checks for signals, between activations.

    A signal that lands inside a callback of the flow (a sink's write, a logic's batch) is asked
    again 5 ms later instead of raised there: an exception out of a callback unwinds Bytewax's
    operators as a Rust panic, and stops raised that way crashed the process (SIGSEGV, in native
    code) twice in about 40 runs of the interrupted-replay test. Outside the flow (starting up) the
    stop is raised at once."""
    if _interrupting.is_set():
        return
    if _in_flow_callback(frame):
        _deferred[:] = [why]
        timer = threading.Timer(0.005, os.kill, (os.getpid(), signal.SIGUSR2))
        timer.daemon = True
        timer.start()
        return
    _interrupting.set()
    _HUSH.hush()
    raise KeyboardInterrupt(why)


_HUSH = PanicHush()


def _in_flow_callback(frame: FrameType | None) -> bool:
    """Whether ``frame`` runs inside a callback Bytewax made, below ``_run_once``'s call of the flow
    (Bytewax's own signal check interrupts ``_run_once``'s frame itself)."""
    if frame is None or frame.f_code is _run_once.__code__:
        return False
    frame = frame.f_back
    while frame is not None:
        if frame.f_code is _run_once.__code__:
            return True
        frame = frame.f_back
    return False


def _retry(signum: int, frame: FrameType | None) -> None:
    if _deferred:
        _raise_once(_deferred[0], frame)


# A process of a cluster that is stopped alone waits for the others to stop too. Stop them
# together (docker compose stop, a supervisor's group stop); one that is still waiting after this
# grace exits anyway, and its peers stop when they lose it (recovery resumes them all).
CLUSTER_STOP_GRACE_S = 15.0
_cluster: list[bool] = [False]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    _stop_requested.append(signal.Signals(signum).name)
    if len(_stop_requested) == 1:
        _arm_leave_timer()
    _raise_once(_stop_requested[-1], frame)


def _arm_leave_timer() -> None:
    if _cluster[0]:
        timer = threading.Timer(CLUSTER_STOP_GRACE_S, _leave_cluster)
        timer.daemon = True  # a process that stops in time exits without waiting for it
        timer.start()


def _leave_cluster() -> None:
    log.warning("the other processes of the cluster did not stop within %.0f s; exiting without them "
                "(they stop when they lose this one; the next start resumes from the last snapshot)",
                CLUSTER_STOP_GRACE_S)
    logging.shutdown()
    os._exit(0 if _stop_requested else 2)  # a lost peer is a failure: a supervisor restarts this one


def _interrupt_from_watch() -> None:
    os.kill(os.getpid(), signal.SIGUSR1)


def _retire() -> None:
    _retiring.set()
    _interrupt_from_watch()


_peers_lost: list[int] = []


def _peer_lost(peers: list[int]) -> None:
    _peers_lost[:] = peers
    _arm_leave_timer()
    _interrupt_from_watch()


def _internal(signum: int, frame: FrameType | None) -> None:
    _raise_once("retired" if _retiring.is_set() else "peer lost" if _peers_lost else "keyspace lost", frame)


def run(settings: Settings, replay: Replay | None = None) -> str:
    """Run until stopped (``stopped``), retired by a switch (``retired``) or, for a replay, until the
    whole range is in Redis (``done``)."""
    # Bytewax checks for Python signals between activations and stops on KeyboardInterrupt.
    # Install the handlers explicitly: a process started in the background inherits SIGINT as
    # ignored, and SIGTERM (docker stop, `atp stack down`) would otherwise kill it mid-batch.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGUSR1, _internal)
    signal.signal(signal.SIGUSR2, _retry)
    _cluster[0] = settings.processes > 1
    gctune.tune()
    memtrim.start(settings.malloc_trim_s, metrics.MALLOC_TRIM.observe)
    if replay is not None and settings.processes > 1:
        raise StackError("a replay runs as one process: unset ATP_CLUSTER_ADDRESSES and ATP_PROCESS_ID for it")
    partitions = kafka_admin.check_kafka(settings)
    topic_config.check(settings)
    check_redis(settings)
    if settings.metrics_port:
        try:
            start_http_server(settings.metrics_port, addr=settings.metrics_host)
        except OSError as exc:
            raise StackError(f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port} ({exc}); "
                             "give each dataflow process its own ATP_METRICS_PORT (0 disables)") from None
    client = connect(settings, socket_timeout=10, socket_connect_timeout=5)
    guard = _crash_guard(settings, replay)
    while True:
        plan = _plan(settings, client, replay)
        if guard is not None:
            guard.begin()  # counts a crash of the previous run; may quarantine a record or read carefully
        SKIP.load(settings.state_dir / SKIP_FILE)  # records to dead-letter unread: `atp dlq skip`, crash loops
        STOCK_PROGRESS.reset(partitions[settings.topic_wms])
        outcome = _run_guarded(settings, plan, client, replay, guard)
        if outcome == LOST:
            # The sink or the watch saw the keyspace vanish: run again from the last snapshot, re-publishing.
            metrics.KEYSPACE_LOST.inc()
            continue
        if outcome == RETIRED:
            deleted = drop(settings, client, settings.generation)
            log.info("generation '%s' retired: deleted %d Redis keys and its recovery store; the API serves '%s'",
                     settings.generation, deleted, current(client, generations_of(settings)))
        elif outcome == DONE and replay is not None:
            write_meta(client, keyspace_of(settings), plan.run_id, READY, plan.spec)
        return outcome


def _crash_guard(settings: Settings, replay: Replay | None) -> CrashGuard | None:
    """The crash ledger of a live single-process run with recovery (docs/crash-loop.md)."""
    if replay is not None or not settings.recovery:
        return None
    if settings.processes > 1:
        log.info("crash-loop quarantine is off in cluster mode (docs/crash-loop.md); `atp dlq skip` still works")
        return None
    store = RecoveryStore(settings.recovery_dir)
    return CrashGuard(settings.generation_dir, settings.state_dir / SKIP_FILE, settings.crash_loop_restarts,
                      committed=lambda: store.committed_offsets()[1],
                      # Exact ends (read past the reported high watermark, which some brokers report short):
                      # careful mode must not end before the record that crashed.
                      unread=lambda resume: unread(resume, kafka_admin.end_offsets(settings),
                                                   kafka_admin.low_offsets(settings)))


def _beat(client: redis.Redis, settings: Settings, flow: str) -> None:
    """The meta's ``flow`` and ``heartbeat`` (process 0 only), best effort: Redis may be what failed."""
    if settings.coordinator:
        try:
            beat(client, keyspace_of(settings), flow)
        except redis.exceptions.RedisError as exc:
            log.debug("could not write flow=%s to the keyspace meta: %s", flow, exc)


def _read_progress(settings: Settings, replay: Replay | None, resumed: dict[str, int]) -> ReadProgress | None:
    """How far a live run has read its input, written with the heartbeat (process 0 only; a replay
    has its own progress): what `atp generation switch` requires (docs/replay-and-generations.md)."""
    if replay is not None or not settings.coordinator:
        return None
    return ReadProgress(lambda: kafka_admin.end_offsets(settings), lambda: read_offsets(resumed))


def _plan(settings: Settings, client: redis.Redis, replay: Replay | None) -> StartPlan:
    if not settings.coordinator:
        return follow_start(settings, client)
    if settings.processes > 1:
        Board(client, settings).clear()  # statuses of an earlier start are void
    return plan_start(settings, client, new=replay.spec if replay else None, live=replay is None)


def _run_guarded(settings: Settings, plan: StartPlan, client: redis.Redis, replay: Replay | None,
                 guard: CrashGuard | None) -> str:
    """``_run_once``, then what a run that did not crash tells the crash ledger and the heartbeat."""
    outcome = _run_once(settings, plan, client, replay, guard)
    if guard is not None:
        guard.end()
    if outcome in (STOPPED, DONE):
        _beat(client, settings, FLOW_STOPPED)
    return outcome


def _flow_of(guard: CrashGuard | None) -> Callable[[], str]:
    return (lambda: guard.flow) if guard is not None else (lambda: RUNNING)


def _tick(guard: CrashGuard | None) -> None:
    SKIP.refresh()
    if guard is not None:
        guard.tick()


def _no_mark() -> int | None:
    return None


def _run_once(settings: Settings, plan: StartPlan, client: redis.Redis, replay: Replay | None,
              guard: CrashGuard | None = None) -> str:
    REPUBLISH.reset(active=plan.republish)
    REPUBLISH.on_lost = _interrupt_from_watch
    _interrupting.clear()
    _deferred.clear()
    _retiring.clear()
    _peers_lost.clear()
    metrics.STATE_KEYS.set(0)  # the logics count themselves in as Bytewax builds them
    metrics.loop_beat_reset()
    metrics.OVERSOLD.set(0)
    # Process 0 holds the recovery store and judges the re-publish; the others only report to it.
    store = RecoveryStore(settings.recovery_dir) if settings.recovery and settings.coordinator else None
    board = Board(client, settings) if settings.processes > 1 else None
    # Where the run resumes: read once (a child process), before Bytewax writes the store.
    resumed = resumed_offsets(store) if replay is None else {}
    watch = KeyspaceWatch(client, settings, plan, store, mark_ready=replay is None and settings.coordinator,
                          on_retire=_retire, board=board, on_peer_lost=_peer_lost,
                          flow=_flow_of(guard) if settings.coordinator else None, on_tick=lambda: _tick(guard),
                          progress=_read_progress(settings, replay, resumed))
    # One process only: in cluster mode process 0 would see only its own partitions move (docs/http-api.md).
    marks = (WatermarkWriter(settings, client, keyspace_of(settings), resumed)
             if store and replay is None and settings.processes == 1 else None)
    _beat(client, settings, guard.flow if guard is not None else RUNNING)
    watch.start()
    if marks is not None:
        marks.start()
    log.info(
        "dataflow starting generation=%s run=%s brokers=%s redis=%s process=%d/%d workers=%d recovery=%s "
        "republish=%s replay=%s", settings.generation, plan.run_id, settings.kafka_bootstrap, redact.url(settings.redis_url),
        settings.process_id or 0, settings.processes, settings.workers, settings.recovery, plan.republish,
        replay is not None,
    )
    try:
        with _HUSH.around(settings):
            cli_main(
                production_flow(settings, plan.spec.formula_version, replay.bounds if replay else None,
                                watermark=marks.latest if marks is not None else _no_mark),
                workers_per_process=settings.workers,
                process_id=settings.process_id,
                addresses=settings.addresses,
                epoch_interval=timedelta(seconds=settings.snapshot_interval_s),
                recovery_config=recovery_config(settings),
            )
    except BaseException as exc:
        # Bytewax wraps the KeyboardInterrupt in its own runtime error; a stop we asked for is
        # not a failure.
        if _stop_requested:
            log.info("dataflow stopped by %s; the next run resumes from the last snapshot", _stop_requested[0])
            return STOPPED
        if REPUBLISH.lost.is_set():
            log.warning("the Redis keyspace '%s' was lost; restarting from the last snapshot to re-publish it",
                        keyspace_of(settings).prefix)
            return LOST
        if _retiring.is_set():
            return RETIRED
        if guard is not None and guard.crashed(exc):  # the next start counts it (a supervisor restarts us)
            _beat(client, settings, CRASH_LOOP)
        if settings.processes > 1:
            # Bytewax panics in every process when one crashes; one that leaves cleanly is noticed
            # by the watch (its status stops changing).
            log.debug("the cluster run failed", exc_info=True)
            why = (f"process(es) {', '.join(map(str, _peers_lost))} stopped reporting for "
                   f"{PEER_TIMEOUT_S:.0f} s" if _peers_lost else repr(sys.exc_info()[1])[:200])
            raise StackError(
                f"process {settings.process_id} of the dataflow cluster stopped ({why}): when another process "
                "stops or becomes unreachable, all of them stop. Start every process again (a supervisor does "
                "it: restart on failure); they resume from the last snapshot.") from None
        raise
    finally:
        watch.stopped.set()
        if marks is not None:
            marks.stopped.set()
    return DONE
