"""The vocabulary the fold step and its timers share: what they emit, and the metric updates
("effects") a batch applies only once it is accepted.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Union

from dataflows import metrics
from dataflows.kafka import DeadLetter
from state import drift
from state.bands import BandChange
from state.position import Position

Output = Union[Position, drift.Alert, BandChange, DeadLetter]
FOLD_STEP = "atp_fold"
# The metric updates of a batch, applied once the batch is accepted: (function, its one argument).
Effects = list[tuple[Callable[[object], object], object]]
# What a batch or a timer read of the world: [wall clock (s), wms read progress (ms) once asked for].
Moment = list


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
NEWEST_EVENT_MS = [0]  # process-wide, for the last-event gauge


def count_late(topic: object) -> None:
    metrics.LATE_EVENTS.labels(topic).inc()


def count_reconciled(labels: object) -> None:
    metrics.RECONCILIATIONS.labels(*labels).inc()  # type: ignore[misc]


def count_alert(labels: object) -> None:
    metrics.ALERTS.labels(*labels).inc()  # type: ignore[misc]


def count_band(band: object) -> None:
    metrics.BAND_CHANGES.labels(band).inc()


def note_newest_event(ms: object) -> None:
    if ms > NEWEST_EVENT_MS[0]:  # type: ignore[operator]
        NEWEST_EVENT_MS[0] = ms  # type: ignore[assignment]
        metrics.LAST_EVENT.set(ms / 1000)  # type: ignore[operator]


def count_event(fx: Effects, topic: str, event_type: str, applied: bool) -> None:
    fx.append((metrics.EVENTS.inc, (topic, event_type, "applied" if applied else "duplicate")))
