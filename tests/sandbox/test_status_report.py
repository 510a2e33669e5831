"""The status report's judgments, without services: lag from metrics and the recovery store, the
dataflow's heartbeat, what decides the exit code, and the JSON document."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from core.config import load_settings
from sandbox.status_report import (
    Component,
    Lag,
    Report,
    api_url,
    consumed_offsets,
    dataflow_line,
    lag_line,
    lag_per_topic,
)

NOW = 1_767_225_600_000


def offset(topic: str, partition: int, value: float):
    return ("atp_input_offset", (("partition", str(partition)), ("topic", topic))), value


def test_consumed_offsets_take_the_metrics_where_they_name_a_partition_else_the_recovery_store():
    samples = dict([offset("wms", 0, 40), offset("wms", 1, 7)])
    committed = {"0-wms": 35, "1-wms": 9, "2-wms": 12, "3-wms": -2}  # -2: from the beginning, nothing read
    assert consumed_offsets(samples, committed) == {"0-wms": 40, "1-wms": 9, "2-wms": 12, "3-wms": 0}
    assert consumed_offsets(None, None) == {}


def test_lag_per_topic_sums_partitions_and_never_guesses_one_nobody_read():
    ends = {"0-wms": 50, "1-wms": 9, "0-oms.order-lines.v1": 0, "0-snapshots": 4, "1-snapshots": 3}
    consumed = {"0-wms": 40, "1-wms": 9, "0-snapshots": 4}
    assert lag_per_topic(["wms", "oms.order-lines.v1", "snapshots"], ends, consumed) == {
        "wms": 10, "oms.order-lines.v1": 0, "snapshots": None}
    line = lag_line((Lag({"wms": 10, "oms.order-lines.v1": 0, "snapshots": None}, "the recovery store"), None))
    assert line.state == "10+" and "snapshots ?" in line.detail and line.ok is None  # lag never fails the status


def test_the_dataflow_is_judged_by_its_heartbeat_then_by_its_metrics():
    s = load_settings({}, ready_heartbeat_s=15)
    meta = {"state": "ready", "flow": "running", "heartbeat": str(NOW - 2_000)}
    assert dataflow_line(s, ("default", meta), None, "refused", NOW).ok is True
    stale = dataflow_line(s, ("default", {**meta, "heartbeat": str(NOW - 60_000)}), {}, None, NOW)
    assert stale.state == "down" and "60.0 s old" in stale.detail
    stopped = dataflow_line(s, ("default", {**meta, "flow": "stopped"}), None, "refused", NOW)
    assert stopped.state == "down" and "stopped" in stopped.detail and "unreachable (refused)" in stopped.detail
    no_heartbeat = ("default", {"state": "ready"})  # an older dataflow: its metrics answering is what counts
    assert dataflow_line(s, no_heartbeat, {}, None, NOW).state == "up"
    assert dataflow_line(s, no_heartbeat, None, "refused", NOW).state == "down"
    assert dataflow_line(s, None, None, "refused", NOW).state == "down"


def test_the_exit_code_follows_the_components_that_count_and_json_keys_have_no_spaces():
    at = datetime(2026, 1, 1, tzinfo=UTC)
    up = [Component("kafka", "up", ok=True), Component("keyspace", "ready", ok=True),
          Component("dead letters", "unknown", detail="Kafka is not reachable", data={"last_hour": None})]
    assert Report(at, up).ok
    assert not Report(at, [*up, Component("api", "down", "http://127.0.0.1:8080", ok=False)]).ok
    doc = json.loads(json.dumps(Report(at, up, {"broker": {"running": False, "pid": None}}).as_dict()))
    assert doc["checked_at"] == "2026-01-01T00:00:00Z" and doc["ok"] is True
    assert doc["components"]["dead_letters"] == {"state": "unknown", "address": "", "detail": "Kafka is not reachable",
                                                 "ok": None, "last_hour": None}
    assert Report(at, up, {"broker": {"running": True, "pid": 12, "kind": "tansu"}}).lines()[0].split() == [
        "process", "broker", "running", "(tansu,", "pid", "12)"]


def test_the_api_is_reached_on_loopback_when_it_binds_every_address():
    assert api_url(load_settings({}, api_host="0.0.0.0", api_port=8081)) == "http://127.0.0.1:8081"
    assert api_url(load_settings({}, api_host="::1")) == "http://[::1]:8080"
