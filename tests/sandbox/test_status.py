"""`atp status` and `atp stack status` against the real broker, Redis, dataflow and API: what is up,
the keyspace, lag, the last event and dead letters; everything down; wrong settings."""

from __future__ import annotations

import json
import signal

import pytest
import typer
from typer.testing import CliRunner

from atp.cli import stack, status
from dataflows.kafka.producer import EventProducer
from sandbox.stack import free_port
from tests.builders import order, snapshot, wms
from tests.conftest import env_of, get_json, processed, send_events, wait_until

pytestmark = pytest.mark.integration


def atp(settings, *args: str):
    """The commands as `atp` registers them, run in this process with ``settings`` as the environment."""
    app = typer.Typer()
    app.command()(status.status)
    app.add_typer(stack.app, name="stack")
    return CliRunner().invoke(app, list(args), env=env_of(settings))


def components(result) -> dict:
    return json.loads(result.stdout)["components"]


def test_a_running_deployment_is_up_with_its_lag_last_event_and_dead_letters(settings, start):
    items = [wms("RECEIPT", qty=40, t=0), order("RESERVE", "L1", 6, t=1), snapshot(40, t=2),
             wms("RECEIPT", qty=5, sku="SKU-2", t=3)]
    producer = EventProducer(settings)
    send_events(producer, items)
    producer.send_raw(settings.topic_wms, b"SKU-1@DC-01", b"plain text")  # a dead letter (bad_magic)
    assert producer.flush() == 0
    flow = start("run")
    api = start("serve")
    wait_until(lambda: processed(settings) >= len(items) + 1, 60, "every record processed", flow)
    base = f"http://{settings.api_host}:{settings.api_port}"
    wait_until(lambda: get_json(f"{base}/readyz"), 30, "the API ready", api)

    result = atp(settings, "status", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] is True and doc["checked_at"].endswith("Z")
    c = doc["components"]
    assert {name: c[name]["state"] for name in ("kafka", "redis", "keyspace", "dataflow", "api")} == {
        "kafka": "up", "redis": "up", "keyspace": "ready", "dataflow": "up", "api": "up"}
    assert c["keyspace"]["generation"] == "default"
    assert c["dataflow"]["flow"] == "running" and c["dataflow"]["metrics_reachable"] is True
    assert c["api"]["healthz"] == 200 and c["api"]["readyz"] == 200
    assert c["lag"]["topics"] == dict.fromkeys(settings.input_topics, 0)
    assert c["lag"]["source"].startswith("the dataflow's metrics")
    assert c["dead_letters"]["last_hour"] == 1
    assert c["last_event"]["at"] is not None  # the builders' events are from 2026-01-01

    lines = atp(settings, "status").stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["kafka", "redis", "keyspace", "dataflow", "api", "lag", "last",
                                                   "dead"]
    assert lines[4].startswith("api") and "healthz ok, readyz ready" in lines[4]

    # The local stack's view adds its processes (none of this test's state dir) to the same report.
    result = atp(settings, "stack", "status", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    stopped = {"running": False, "pid": None}
    assert doc["processes"] == dict.fromkeys(("broker", "redis", "dataflow", "api"), stopped)
    assert doc["components"]["keyspace"]["state"] == "ready"
    assert atp(settings, "stack", "status").stdout.split()[:3] == ["process", "broker", "stopped"]

    # The dataflow stopped: down (its meta says so), and the records sent since then are lag, known
    # from its recovery store now that its metrics endpoint is gone.
    flow.stop(signal.SIGTERM)
    send_events(EventProducer(settings), [wms("RECEIPT", qty=1, t=10 + i, event_id=f"late-{i}") for i in range(3)])
    result = atp(settings, "status", "--json")
    assert result.exit_code == 1, result.output
    c = components(result)
    assert c["dataflow"]["state"] == "down" and c["dataflow"]["flow"] == "stopped"
    assert c["dataflow"]["metrics_reachable"] is False
    assert c["api"]["readyz"] == 503 and c["api"]["readyz_code"] == "dataflow_stopped"
    assert c["lag"]["source"] == "the recovery store"
    assert c["lag"]["topics"][settings.topic_wms] >= 3
    assert c["last_event"]["at"] is not None  # now from the newest position's as_of


def test_everything_down_is_reported_without_a_secret(settings):
    gone = settings.model_copy(update={
        "kafka_bootstrap": f"127.0.0.1:{free_port()}", "redis_url": f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0",
        "api_port": free_port(), "metrics_port": free_port()})
    result = atp(gone, "status", "--json")
    assert result.exit_code == 1, result.output
    assert "s3cret-pw" not in result.output
    c = components(result)
    assert {n: c[n]["state"] for n in ("kafka", "redis", "keyspace", "dataflow", "api")} == {
        "kafka": "down", "redis": "down", "keyspace": "unknown", "dataflow": "down", "api": "down"}
    assert c["redis"]["address"] == f"redis://:***@127.0.0.1:{gone.redis_url.rsplit(':', 1)[1]}"
    assert "atp stack up" in c["kafka"]["detail"]
    assert c["lag"]["state"] == c["dead_letters"]["state"] == "unknown"
    lines = atp(gone, "status").stdout.splitlines()
    assert len(lines) == 8 and all(line[13:].split()[0] in ("down", "unknown") for line in lines)  # name, state


def test_wrong_settings_are_one_line_and_exit_code_2(settings):
    env = {**env_of(settings), "ATP_API_PORT": "not-a-port"}
    app = typer.Typer()
    app.command()(status.status)
    result = CliRunner().invoke(app, [], env=env)
    assert result.exit_code == 2
    assert "ATP_API_PORT='not-a-port'" in result.stderr and "Traceback" not in result.output
