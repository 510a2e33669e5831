"""The vocabulary the fold step and its timers share: what they emit, what they read besides events
(``FoldContext``), and the metric updates ("effects") a batch applies only once it is accepted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dataflows import metrics
from dataflows.kafka import DeadLetter
from dataflows.kafka.progress import STOCK_PROGRESS
from state import drift
from state.bands import BandChange
from state.fold import LATENESS_MS
from state.position import Position
from state.safety import SafetyStock

Output = Position | drift.Alert | BandChange | DeadLetter
FOLD_STEP = "atp_fold"
# The metric updates of a batch, applied once the batch is accepted: (function, its one argument).
Effects = list[tuple[Callable[[Any], object], Any]]
# What a batch or a timer read of the world: [wall clock (s), wms read progress (ms) once asked for].
Moment = list


@dataclass(frozen=True)
class FoldContext:
    """What the fold needs besides events: settings, and where each event type was read from."""

    dedup_window_ms: int
    safety: SafetyStock
    topic_of: Mapping[type, str]
    clock: Callable[[], float] = field(default=time.time)
    formula: int = 1  # the ATP formula version (state.position.FORMULAS)
    lateness_ms: int = LATENESS_MS
    drift: drift.DriftPolicy = field(default_factory=drift.DriftPolicy)
    reconcile_delay_ms: int = 2000  # a snapshot waits at least this long for the changes before its as_of
    reconcile_timeout_ms: int = 60_000  # and at most this long, when the wms topic does not get there
    out_of_order_ms: int = 1000  # how far event times may step back within a wms partition
    low_stock_atp: int = 10
    stock_progress: Callable[[], int] = field(default=STOCK_PROGRESS.get)  # see dataflows.kafka.progress


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NEWEST_EVENT_MS = [0]  # process-wide, for the last-event gauge
ALERT_LOCATIONS_MAX = 500  # distinct location labels of atp_drift_alerts_total in one process
OTHER_LOCATION = "_other"  # no location id can be this: an id starts with a letter or digit (core.contract)
_ALERT_LOCATIONS: set[str] = set()  # process-wide, like the metric it bounds


def count_late(topic: str) -> None:
    metrics.LATE_EVENTS.labels(topic).inc()


def count_reconciled(labels: tuple[str, str]) -> None:
    metrics.RECONCILIATIONS.labels(*labels).inc()


def count_alert(labels: tuple[str, str, str, str]) -> None:
    """Counts an alert by kind, severity, source system and location: the first ``ALERT_LOCATIONS_MAX``
    locations this process alerts for keep their own label, later ones count under ``other`` (a
    producer could send a new location id with every snapshot; each label value is a series). Worker
    threads check and add without a lock: the bound can be passed by at most one per other worker."""
    kind, severity, source, location = labels
    if location not in _ALERT_LOCATIONS:
        if len(_ALERT_LOCATIONS) >= ALERT_LOCATIONS_MAX:
            location = OTHER_LOCATION
        else:
            _ALERT_LOCATIONS.add(location)
    metrics.ALERTS.labels(kind, severity, source, location).inc()


def count_band(band: str) -> None:
    metrics.BAND_CHANGES.labels(band).inc()


def note_newest_event(ms: int) -> None:
    if ms > NEWEST_EVENT_MS[0]:
        NEWEST_EVENT_MS[0] = ms
        metrics.LAST_EVENT.set(ms / 1000)


def count_event(fx: Effects, topic: str, event_type: str, applied: bool) -> None:
    fx.append((metrics.EVENTS.inc, (topic, event_type, "applied" if applied else "duplicate")))
