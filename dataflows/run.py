"""Run the dataflow in this process: start-up checks, metrics endpoint, recovery, Bytewax."""

from __future__ import annotations

import logging
import signal
from datetime import timedelta
from typing import Any

import redis
from bytewax.run import cli_main
from bytewax.recovery import RecoveryConfig, init_db_dir
from prometheus_client import start_http_server

from atp.config import Settings
from atp.errors import StackError
from dataflows import kafka_io
from dataflows.flow import production_flow

log = logging.getLogger(__name__)


def check_redis(url: str, timeout_s: float = 5.0) -> None:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s).ping()
    except redis.exceptions.RedisError as exc:
        raise StackError(
            f"cannot reach Redis at {url} ({exc}); start the local stack with `atp stack up` or set ATP_REDIS_URL"
        ) from None


def recovery_config(settings: Settings) -> RecoveryConfig | None:
    """Bytewax recovery partitions under the state dir, created on the first run only."""
    if not settings.recovery:
        return None
    directory = settings.recovery_dir
    if not directory.exists() or not any(directory.glob("*.sqlite3")):
        directory.mkdir(parents=True, exist_ok=True)
        init_db_dir(directory, settings.workers)
        log.info("created %d recovery partitions in %s", settings.workers, directory)
    return RecoveryConfig(str(directory), backup_interval=timedelta(0))


_stop_requested: list[str] = []


def _interrupt(signum: int, _frame: Any) -> None:
    _stop_requested.append(signal.Signals(signum).name)
    raise KeyboardInterrupt(_stop_requested[-1])


def run(settings: Settings) -> None:
    # Bytewax checks for Python signals between activations and stops on KeyboardInterrupt.
    # Install the handlers explicitly: a process started in the background inherits SIGINT as
    # ignored, and SIGTERM (docker stop, `atp stack down`) would otherwise kill it mid-batch.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    kafka_io.check_kafka(settings)
    check_redis(settings.redis_url)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    flow = production_flow(settings)
    log.info(
        "dataflow starting brokers=%s redis=%s workers=%d recovery=%s",
        settings.kafka_bootstrap, settings.redis_url, settings.workers, settings.recovery,
    )
    try:
        cli_main(
            flow,
            workers_per_process=settings.workers,
            epoch_interval=timedelta(seconds=settings.snapshot_interval_s),
            recovery_config=recovery_config(settings),
        )
    except BaseException:
        # Bytewax wraps the KeyboardInterrupt in its own runtime error; a stop we asked for is
        # not a failure.
        if not _stop_requested:
            raise
        log.info("dataflow stopped by %s; the next run resumes from the last snapshot", _stop_requested[0])
