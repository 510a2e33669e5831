"""The lock-free per-thread metrics expose exactly what prometheus_client's own would."""

from __future__ import annotations

import threading

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest

from dataflows.hotmetrics import HotCounter, HotHistogram

BUCKETS = (0.01, 1, 5, 3600)
VALUES = [0.0, 0.01, 0.011, 1, 1.5, 5, 7, 3600, 4000, 0.2]


def _lines(text: bytes, name: str) -> list[str]:
    return [line for line in text.decode().splitlines() if line.startswith(name) and "_created" not in line]


def test_counts_from_many_threads_add_up_and_render_like_prometheus_client():
    hot = HotCounter("t_hot_events_total", "doc", ["topic", "outcome"])
    hist = HotHistogram("t_hot_lag_seconds", "doc", BUCKETS)
    ref = CollectorRegistry()
    ref_counter = Counter("t_hot_events_total", "doc", ["topic", "outcome"], registry=ref)
    ref_hist = Histogram("t_hot_lag_seconds", "doc", buckets=BUCKETS, registry=ref)

    def work(n):
        for i in range(n):
            hot.inc(("wms", "applied"))
            hist.observe(VALUES[i % len(VALUES)])
        hot.inc(("orders", "duplicate"), 2)

    threads = [threading.Thread(target=work, args=(10_000,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _ in range(4):
        ref_counter.labels("wms", "applied").inc(10_000)
        ref_counter.labels("orders", "duplicate").inc(2)
        for i in range(10_000):
            ref_hist.observe(VALUES[i % len(VALUES)])
    assert hot.value(("wms", "applied")) == 40_000
    mine, theirs = generate_latest(REGISTRY), generate_latest(ref)
    assert sorted(_lines(mine, "t_hot_events_total")) == sorted(_lines(theirs, "t_hot_events_total"))
    assert _lines(mine, "t_hot_lag_seconds_bucket") == _lines(theirs, "t_hot_lag_seconds_bucket")
    assert _lines(mine, "t_hot_lag_seconds_count") == _lines(theirs, "t_hot_lag_seconds_count")
    (mine_sum,), (their_sum,) = _lines(mine, "t_hot_lag_seconds_sum"), _lines(theirs, "t_hot_lag_seconds_sum")
    assert abs(float(mine_sum.split()[1]) - float(their_sum.split()[1])) < 1e-3  # summed in another order
    assert len(_lines(mine, "t_hot_lag_seconds_bucket")) == len(BUCKETS) + 1
