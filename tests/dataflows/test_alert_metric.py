"""atp_drift_alerts_total counts by location, with a bounded number of location labels."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import REGISTRY

from core.contract import ID_RE
from dataflows import effects, metrics


def _count(**labels):
    return REGISTRY.get_sample_value("atp_drift_alerts_total", labels) or 0.0


def test_alerts_count_by_location_and_the_labels_are_bounded(monkeypatch):
    monkeypatch.setattr(effects, "_ALERT_LOCATIONS", set())
    monkeypatch.setattr(effects, "ALERT_LOCATIONS_MAX", 2)
    base = {"kind": "DRIFT", "severity": "critical", "source_system": "ERP-T"}
    before = {loc: _count(**base, location=loc) for loc in ("T-1", "T-2", "T-3", "_other")}
    for loc in ("T-1", "T-2", "T-1", "T-3", "T-4"):
        effects.count_alert(("DRIFT", "critical", "ERP-T", loc))
    after = {loc: _count(**base, location=loc) - before[loc] for loc in before}
    # The first two locations keep their label; the third and fourth share "_other" (no location id
    # can be that), and a known one still counts under its own name once the bound is reached.
    assert after == {"T-1": 2.0, "T-2": 1.0, "T-3": 0.0, "_other": 2.0}
    assert not ID_RE.fullmatch(effects.OTHER_LOCATION)
    assert _count(**base, location="T-4") == 0.0


def test_the_loop_heartbeat_moves_at_most_once_a_second_and_restarts_at_zero(monkeypatch):
    clock = iter([1_000.0, 1_000.4, 1_001.2, 1_001.3])
    monkeypatch.setattr(metrics, "time", SimpleNamespace(time=lambda: next(clock)))
    monkeypatch.setattr(metrics, "_BEAT", [0.0])
    seen = []
    for _ in range(3):
        metrics.loop_beat()
        seen.append(REGISTRY.get_sample_value("atp_dataflow_loop_timestamp_seconds"))
    assert seen == [1_000.0, 1_000.0, 1_001.2]
    metrics.loop_beat_reset()  # a run starting again in the same process
    assert REGISTRY.get_sample_value("atp_dataflow_loop_timestamp_seconds") == 0
    metrics.loop_beat()
    assert REGISTRY.get_sample_value("atp_dataflow_loop_timestamp_seconds") == 1_001.3


def test_an_output_waiting_on_the_broker_keeps_the_loop_heartbeat(monkeypatch):
    """A flush that waits for a slow or absent broker is no hang: the clock moves while it waits."""
    from bytewax.connectors.kafka import KafkaSinkMessage

    from dataflows.kafka import sink

    beats = []
    monkeypatch.setattr(sink, "loop_beat", lambda: beats.append(1))

    class SlowBroker:  # the producer's queue drains over three seconds
        def __init__(self):
            self.left = [3, 2, 1, 0]

        def produce(self, *args, **kwargs):
            pass

        def poll(self, timeout):
            return 0

        def flush(self, timeout=None):
            assert timeout is not None, "an unbounded flush() cannot beat"
            return self.left.pop(0)

    sink._Partition(SlowBroker()).write_batch([KafkaSinkMessage(b"k", b"v", topic="t")])
    assert len(beats) == 3
