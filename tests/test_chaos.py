"""A CI-sized chaos run: the real dataflow and API on a private stack, two kill -9s, a Redis flush,
duplicates and poison; every key in Redis and over HTTP must equal the independent oracle."""

from __future__ import annotations

import json

import pytest

from loadtest import chaos_report
from loadtest.chaos import ChaosConfig, run_chaos

pytestmark = pytest.mark.integration


def test_chaos_run_loses_nothing_and_counts_nothing_twice(tmp_path):
    cfg = ChaosConfig(events=20_000, skus=200, locations=10, seed=5, kills=2, kill_gap_s=(3.0, 6.0),
                      redis_loss="flush", pause_dataflow=False, pause_redis=False, snapshot_interval_s=1.0,
                      settle_timeout_s=120.0)
    lines: list[str] = []
    report = run_chaos(cfg, tmp_path / "work", log=lines.append)
    js, md = chaos_report.write(report, tmp_path / "reports")
    print("\n".join(lines))
    assert json.loads(js.read_text())["passed"] == report["passed"] and "# Chaos run" in md.read_text()
    e = report["events"]
    assert e["produced"] == e["in_log"] > 20_000 + e["duplicates_produced"]
    assert e["distinct_valid_events"] == 20_000
    assert e["duplicates_absorbed"] == e["duplicates_produced"] > 1000
    assert e["dead_lettered"] == e["poison_produced"] > 50
    assert set(e["dead_letter_reasons"]) == {"bad_magic", "unknown_schema", "truncated", "invalid_quantity"}
    assert e["processed_plus_dead_lettered_equals_produced"]
    assert report["checks"] == dict.fromkeys(report["checks"], 0), (report["examples"], report["unplanned_exits"])
    assert report["keys"]["compared_redis"] == report["keys"]["compared_http"] > 1000
    kinds = [f["kind"] for f in report["faults"]]
    assert sorted(kinds) == ["kill", "kill", "redis_flush"]
    assert all(f["recovery_s"] is not None and f["recovery_s"] < 120 for f in report["faults"])
    # The poller saw the API both serving and refusing during the rebuild, and never a regression.
    responses = report["api"]["responses"]
    assert responses.get("200", 0) > 100
    assert any(k.startswith("503") for k in responses), responses
    assert report["passed"]
