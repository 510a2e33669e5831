"""Fixtures: a real embedded broker and redis-server for the session, unique topics per test."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from core.config import Settings, child_environ, load_settings
from dataflows.kafka.admin import admin, create_topics
from sandbox.child import ROOT, Child
from sandbox.demo import events_processed
from sandbox.stack import Stack, free_port

# The broker the integration tests run against: tansu (embedded, the default) or kafka (a real
# Apache Kafka, started by `sandbox.stack` from the pom's jars; `make test` runs the marked tests again
# on it).
BROKER = os.environ.get("TEST_BROKER", "tansu")
if BROKER not in ("tansu", "kafka"):
    raise pytest.UsageError(f"TEST_BROKER={BROKER!r}: use tansu or kafka")


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Broker and Redis on free loopback ports, started for the session and stopped after it."""
    # Auth off for the suite (loopback only); tests/serving/test_auth.py turns it on.
    s = load_settings({}, state_dir=tmp_path_factory.mktemp("stack"), stack_broker=BROKER, api_auth="disabled",
                      kafka_bootstrap=f"127.0.0.1:{free_port()}", redis_url=f"redis://127.0.0.1:{free_port()}/0")
    stack = Stack(s)
    stack.up(create_topics=False)
    yield s
    stack.down()


@pytest.fixture
def settings(stack_settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """Settings of one test: its own topics, Redis key prefix, state dir and ports."""
    tag = uuid.uuid4().hex[:8]
    s = load_settings(
        {}, **{**stack_settings.model_dump(exclude_none=True),
               "state_dir": tmp_path / "state", "redis_key_prefix": f"t{tag}",
               "topic_wms": f"wms.{tag}", "topic_orders": f"orders.{tag}", "topic_snapshots": f"snapshots.{tag}",
               "topic_availability": f"availability.{tag}", "topic_dead_letter": f"dead-letter.{tag}",
               "topic_drift_alerts": f"drift-alerts.{tag}", "topic_thresholds": f"thresholds.{tag}",
               "topic_controls": f"controls.{tag}",
               "metrics_port": free_port(), "api_port": free_port(), "snapshot_interval_s": 1.0}
    )
    create_topics(s)
    yield s
    # A real broker keeps every topic (and its files) for the whole session: give them back.
    try:
        futures = admin(s).delete_topics(list(s.all_topics), operation_timeout=10)
        for fut in futures.values():
            fut.result(timeout=15)
    except Exception:  # noqa: BLE001 - cleaning up; a broker that cannot delete them keeps them
        pass


@pytest.fixture
def rclient(stack_settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stack_settings.redis_url)
    yield client
    client.close()


def env_of(s: Settings) -> dict[str, str]:
    return child_environ(s, os.environ)


def run_atp(s: Settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``atp ARGS`` in a child process with ``s`` as its settings; its output captured."""
    return subprocess.run([sys.executable, "-m", "atp", *args], cwd=ROOT, env=env_of(s),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def start(settings: Settings, tmp_path: Path) -> Iterator:
    procs: list[Child] = []

    def _start(*args: str, s: Settings | None = None) -> Child:
        proc = Child(list(args), s or settings, tmp_path / f"{args[0]}-{len(procs)}.log").start()
        procs.append(proc)
        return proc

    yield _start
    for proc in procs:
        proc.stop()


def wait_until(predicate, timeout_s: float, what: str, proc: Child | None = None, interval: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.p.poll() is not None:
            raise AssertionError(f"process exited while waiting for {what}:\n{proc.tail()}")
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}" + (f":\n{proc.tail()}" if proc else ""))


def send_events(producer, items, rate: float | None = None) -> None:
    """Produce (alias, record) items, at about ``rate`` per second when given; all must be delivered."""
    for i, (alias, rec) in enumerate(items):
        producer.send(alias, rec)
        if rate and i % 200 == 199:
            producer.flush()
            time.sleep(200 / rate)
    assert producer.flush() == 0


def get_json(url: str):
    """The body of a 200 answer, or None (not up yet, or any other status)."""
    try:
        r = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


def processed(s: Settings) -> int:
    try:
        return events_processed(f"http://{s.metrics_host}:{s.metrics_port}/metrics")
    except httpx.HTTPError:
        return -1
