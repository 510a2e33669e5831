"""Units reserved and shipped per location per minute: Bytewax event-time windowing, as metrics.

Tumbling one-minute windows keyed by location (no SKU: the metric's labels stay bounded). Each
batch is summed per (location, minute) before the window, so the window sees a handful of items
per batch instead of one per event. A window is emitted once the event clock has passed its end by
the allowed lateness (``ATP_DEMAND_LATENESS_S``); a later item is counted as late, not added.
These count input events as read (a re-sent duplicate counts again); positions are not affected.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.operators.windowing import EventClock, TumblingWindower, fold_window
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from prometheus_client import Counter, Gauge

from state.events import OrderLineEvent, WarehouseEvent

MINUTE = timedelta(minutes=1)
ALIGN = datetime(2020, 1, 1, tzinfo=UTC)

UNITS = Counter("atp_location_demand_units_total",
                "Units reserved or shipped per location, added as each one-minute window closes.", ["location", "kind"])
LAST_MINUTE = Gauge("atp_location_demand_last_window_units",
                    "Units reserved or shipped at a location in its newest closed one-minute window.", ["location", "kind"])
WINDOW_END = Gauge("atp_location_demand_last_window_end_seconds",
                   "End of a location's newest closed one-minute window (event time, Unix seconds).", ["location"])
LATE = Counter("atp_location_demand_late_total", "Per-minute sums that arrived after their window closed.")

# (minute start ms, reserved units, shipped units)
Sums = tuple[int, int, int]


def per_minute(batch: list[tuple[str, Any]]) -> list[tuple[str, Sums]]:
    """Sum one batch of (key, event) per location and event-time minute."""
    sums: dict[tuple[str, int], list[int]] = {}
    for _, event in batch:
        t = type(event)
        if t is OrderLineEvent and event.event_type == "RESERVE":
            slot = 0
        elif t is WarehouseEvent and event.event_type == "SHIP":
            slot = 1
        else:
            continue
        where = (event.location, event.occurred_ms - event.occurred_ms % 60_000)
        acc = sums.get(where)
        if acc is None:
            acc = sums[where] = [0, 0]
        acc[slot] += event.qty
    return [(loc, (minute, r, s)) for (loc, minute), (r, s) in sums.items()]


def _ts(v: Sums) -> datetime:
    return datetime.fromtimestamp(v[0] / 1000, UTC)


def _add(acc: list[int], v: Sums) -> list[int]:
    return [acc[0] + v[1], acc[1] + v[2]]


def _merge(a: list[int], b: list[int]) -> list[int]:
    return [a[0] + b[0], a[1] + b[1]]


def location_demand(stream: Stream[Any], allowed_lateness: timedelta) -> Stream[tuple[str, tuple[int, list[int]]]]:
    """(key, event) stream -> (location, (window id, [reserved, shipped])) as windows close."""
    # Step ids are part of recovery state: renaming one is a migration.
    sums = op.flat_map_batch("demand_per_minute", stream, per_minute)
    clock = EventClock(_ts, wait_for_system_duration=allowed_lateness)
    out = fold_window("location_demand", sums, clock, TumblingWindower(MINUTE, ALIGN), lambda: [0, 0], _add, _merge)
    op.inspect("location_demand_late", out.late, lambda _step, _item: LATE.inc())
    return out.down


class DemandMetrics(DynamicSink[Any]):
    """Closed windows -> the per-location metrics."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DemandPartition:
        return _DemandPartition()


class _DemandPartition(StatelessSinkPartition[Any]):
    def __init__(self) -> None:
        self._newest: dict[str, int] = {}  # location -> newest window id written to the gauges

    def write_batch(self, items: list[tuple[str, tuple[int, list[int]]]]) -> None:
        for location, (window_id, (reserved, shipped)) in items:
            UNITS.labels(location, "reserved").inc(reserved)
            UNITS.labels(location, "shipped").inc(shipped)
            if window_id >= self._newest.get(location, window_id):  # windows may close out of order
                self._newest[location] = window_id
                WINDOW_END.labels(location).set((ALIGN + MINUTE * (window_id + 1)).timestamp())
                LAST_MINUTE.labels(location, "reserved").set(reserved)
                LAST_MINUTE.labels(location, "shipped").set(shipped)
