"""Run the dataflow in this process: start-up checks, metrics endpoint, recovery, Bytewax."""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis
from bytewax.run import cli_main
from bytewax.recovery import RecoveryConfig
from prometheus_client import start_http_server

from atp.config import Settings
from atp.errors import StackError
from atp.redisconn import connect, connect_url
from atp.generations import Spec, current, drop, write_meta
from dataflows import kafka_io, metrics
from dataflows.continuity import KeyspaceWatch, StartPlan, plan_start
from dataflows.recovery import RecoveryStore
from dataflows.republish import REPUBLISH
from dataflows.flow import production_flow
from dataflows.progress import STOCK_PROGRESS
from dataflows.kafka_io import Bounds
from state.projection import READY

log = logging.getLogger(__name__)


def check_redis(url: str, timeout_s: float = 5.0, cluster: bool = False) -> None:
    try:
        connect_url(url, cluster, socket_connect_timeout=timeout_s, socket_timeout=timeout_s).ping()
    except redis.exceptions.RedisError as exc:
        raise StackError(
            f"cannot reach Redis at {url} ({exc}); start the local stack with `atp stack up` or set ATP_REDIS_URL"
        ) from None


def recovery_config(settings: Settings) -> RecoveryConfig | None:
    """Bytewax recovery partitions under the state dir (created and checked by ``plan_start``)."""
    if not settings.recovery:
        return None
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


def _raise_once(why: str) -> None:
    if not _interrupting.is_set():
        _interrupting.set()
        raise KeyboardInterrupt(why)


def _interrupt(signum: int, _frame: Any) -> None:
    _stop_requested.append(signal.Signals(signum).name)
    _raise_once(_stop_requested[-1])


def _interrupt_from_watch() -> None:
    os.kill(os.getpid(), signal.SIGUSR1)


def _retire() -> None:
    _retiring.set()
    _interrupt_from_watch()


def _internal(signum: int, _frame: Any) -> None:
    _raise_once("retired" if _retiring.is_set() else "keyspace lost")


def run(settings: Settings, replay: Replay | None = None) -> str:
    """Run until stopped (``stopped``), retired by a switch (``retired``) or, for a replay, until the
    whole range is in Redis (``done``)."""
    # Bytewax checks for Python signals between activations and stops on KeyboardInterrupt.
    # Install the handlers explicitly: a process started in the background inherits SIGINT as
    # ignored, and SIGTERM (docker stop, `atp stack down`) would otherwise kill it mid-batch.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGUSR1, _internal)
    partitions = kafka_io.check_kafka(settings)
    check_redis(settings.redis_url, cluster=settings.redis_cluster)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    client = connect(settings, socket_timeout=10, socket_connect_timeout=5)
    while True:
        plan = plan_start(settings, client, new=replay.spec if replay else None, live=replay is None)
        STOCK_PROGRESS.reset(partitions[settings.topic_wms])
        outcome = _run_once(settings, plan, client, replay)
        if outcome == LOST:
            # The sink or the watch saw the keyspace vanish: run again from the last snapshot, re-publishing.
            metrics.KEYSPACE_LOST.inc()
            continue
        if outcome == RETIRED:
            deleted = drop(settings, client, settings.generation)
            log.info("generation '%s' retired: deleted %d Redis keys and its recovery store; the API serves '%s'",
                     settings.generation, deleted, current(client, settings.generations))
        elif outcome == DONE and replay is not None:
            write_meta(client, settings.keyspace, plan.run_id, READY, plan.spec)
        return outcome


def _run_once(settings: Settings, plan: StartPlan, client: redis.Redis, replay: Replay | None) -> str:
    REPUBLISH.reset(active=plan.republish)
    REPUBLISH.on_lost = _interrupt_from_watch
    _interrupting.clear()
    _retiring.clear()
    metrics.STATE_KEYS.set(0)  # the logics count themselves in as Bytewax builds them
    metrics.OVERSOLD.set(0)
    store = RecoveryStore(settings.recovery_dir) if settings.recovery else None
    watch = KeyspaceWatch(client, settings, plan, store, mark_ready=replay is None, on_retire=_retire)
    watch.start()
    log.info(
        "dataflow starting generation=%s run=%s brokers=%s redis=%s workers=%d recovery=%s republish=%s replay=%s",
        settings.generation, plan.run_id, settings.kafka_bootstrap, settings.redis_url, settings.workers,
        settings.recovery, plan.republish, replay is not None,
    )
    try:
        cli_main(
            production_flow(settings, plan.spec.formula_version, replay.bounds if replay else None),
            workers_per_process=settings.workers,
            epoch_interval=timedelta(seconds=settings.snapshot_interval_s),
            recovery_config=recovery_config(settings),
        )
    except BaseException:
        # Bytewax wraps the KeyboardInterrupt in its own runtime error; a stop we asked for is
        # not a failure.
        if _stop_requested:
            log.info("dataflow stopped by %s; the next run resumes from the last snapshot", _stop_requested[0])
            return STOPPED
        if REPUBLISH.lost.is_set():
            log.warning("the Redis keyspace '%s' was lost; restarting from the last snapshot to re-publish it",
                        settings.keyspace.prefix)
            return LOST
        if _retiring.is_set():
            return RETIRED
        raise
    finally:
        watch.stopped.set()
    return DONE
