"""atp_drift_alerts_total counts by location, with a bounded number of location labels."""

from __future__ import annotations

from prometheus_client import REGISTRY

from dataflows import effects


def _count(**labels):
    return REGISTRY.get_sample_value("atp_drift_alerts_total", labels) or 0.0


def test_alerts_count_by_location_and_the_labels_are_bounded(monkeypatch):
    monkeypatch.setattr(effects, "_ALERT_LOCATIONS", set())
    monkeypatch.setattr(effects, "ALERT_LOCATIONS_MAX", 2)
    base = {"kind": "DRIFT", "severity": "critical", "source_system": "ERP-T"}
    before = {loc: _count(**base, location=loc) for loc in ("T-1", "T-2", "T-3", "other")}
    for loc in ("T-1", "T-2", "T-1", "T-3", "T-4"):
        effects.count_alert(("DRIFT", "critical", "ERP-T", loc))
    after = {loc: _count(**base, location=loc) - before[loc] for loc in before}
    # The first two locations keep their label; the third and fourth share "other", and a known one
    # still counts under its own name once the bound is reached.
    assert after == {"T-1": 2.0, "T-2": 1.0, "T-3": 0.0, "other": 2.0}
    assert _count(**base, location="T-4") == 0.0


def test_the_loop_heartbeat_moves_at_most_once_a_second(monkeypatch):
    from dataflows.kafka import source

    clock = iter([1_000.0, 1_000.4, 1_001.2])
    monkeypatch.setattr(source.time, "time", lambda: next(clock))
    monkeypatch.setattr(source, "_BEAT", [0.0])
    seen = []
    for _ in range(3):
        source.loop_beat()
        seen.append(REGISTRY.get_sample_value("atp_dataflow_loop_timestamp_seconds"))
    assert seen == [1_000.0, 1_000.0, 1_001.2]
