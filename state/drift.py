"""Reconciliation: a snapshot's on-hand against the stream's, as of the snapshot's ``as_of``.

Pure: the caller passes the policy and the time. ``drift = observed - expected`` where observed is
the snapshot's on-hand and expected is the stream's on-hand as of ``as_of`` (every stock status).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, final

from state.events import InventorySnapshot
from state.fold import (
    DELTA,
    SET_AVAILABLE,
    Entry,
    KeyState,
    history_around,
    on_hand_at,
    rebase,
)

WARNING, CRITICAL = "warning", "critical"
SEVERITIES = (WARNING, CRITICAL)
MATCH, DRIFT, UNVERIFIABLE = "match", "drift", "unverifiable"
ALERT, REBASE = "alert", "rebase"


@dataclass(frozen=True)
class Level:
    """A level is reached when |drift| is at least ``units`` AND at least ``pct`` % of on-hand."""

    units: int
    pct: float = 0.0

    def reached(self, drift: int, on_hand: int) -> bool:
        size = abs(drift)
        return size > 0 and size >= self.units and size * 100 >= self.pct * max(on_hand, 0)


@dataclass(frozen=True)
class Thresholds:
    warning: Level = Level(1)
    critical: Level = Level(10, 10.0)

    def severity(self, drift: int, on_hand: int) -> str | None:
        if self.critical.reached(drift, on_hand):
            return CRITICAL
        if self.warning.reached(drift, on_hand):
            return WARNING
        return None


@dataclass(frozen=True)
class DriftPolicy:
    """What to do per source system, and the thresholds (per location where overridden)."""

    default: Thresholds = Thresholds()
    locations: Mapping[str, Thresholds] = field(default_factory=dict)
    actions: Mapping[str, str] = field(default_factory=lambda: {"ERP": ALERT, "WMS": REBASE})

    def thresholds(self, location: str) -> Thresholds:
        return self.locations.get(location, self.default)

    def action(self, source_system: str) -> str:
        return self.actions.get(source_system, ALERT)


@dataclass(frozen=True, slots=True)
class Moved:
    """One stock change that moved the stream's figure (for an alert to explain itself)."""

    event_id: str
    event_type: str
    effective_at: int
    change: str  # "delta" | "set_available" (a COUNT) | "set_on_hand" (a snapshot taken as the truth)
    available: int  # the change of AVAILABLE, or the absolute figure set
    non_sellable: int  # the change of the non-sellable statuses


@final
@dataclass(frozen=True, slots=True)
class Alert:
    """A drift or oversold alert for one key. ``alert_id`` is stable across re-deliveries."""

    alert_id: str
    kind: str  # "DRIFT" | "OVERSOLD"
    severity: str
    sku: str
    location: str
    as_of: int  # event time the figures refer to (ms)
    detected_at: int  # processing time (ms)
    expected: int
    observed: int
    difference: int
    source_system: str | None = None
    snapshot_id: str | None = None
    action: str | None = None  # "alert" | "rebase"
    corrected: bool = False
    version: int = 0  # the key's version when detected: a newer alert replaces an older one
    moved_by: tuple[Moved, ...] = ()
    correlation_id: str | None = None  # DRIFT: the snapshot's (lineage: which business action raised it)

    @property
    def key(self) -> str:
        return f"{self.sku}@{self.location}"

    def as_dict(self) -> dict[str, Any]:
        """The ``DriftAlert`` record (also the alert's JSON in Redis and over HTTP)."""
        record: dict[str, Any] = {f: getattr(self, f) for f in _ALERT_FIELDS}
        record["moved_by"] = [{f: getattr(m, f) for f in _MOVED_FIELDS} for m in self.moved_by]
        return record


_ALERT_FIELDS = tuple(f.name for f in fields(Alert) if f.name != "moved_by")
_MOVED_FIELDS = tuple(f.name for f in fields(Moved))


@dataclass(frozen=True, slots=True)
class Reconciliation:
    outcome: str  # match | drift | unverifiable
    drift: int | None
    alert: Alert | None


def _moved(entries: list[Entry]) -> tuple[Moved, ...]:
    kinds = {DELTA: "delta", SET_AVAILABLE: "set_available"}
    return tuple(Moved(e[5], e[6], e[0], kinds.get(e[2], "set_on_hand"), e[3], e[4]) for e in entries)


def reconcile(state: KeyState, snap: InventorySnapshot, policy: DriftPolicy, lateness_ms: int,
              now_ms: int) -> Reconciliation:
    """Compare, and under the ``rebase`` policy correct the state to the snapshot (any drift)."""
    expected = on_hand_at(state, snap.as_of_ms, lateness_ms)
    if expected is None:
        return Reconciliation(UNVERIFIABLE, None, None)
    drift = snap.on_hand - expected
    if drift == 0:
        return Reconciliation(MATCH, 0, None)
    action = policy.action(snap.source_system)
    moved = _moved(history_around(state, snap.as_of_ms))
    if action == REBASE:
        rebase(state, snap, lateness_ms)
    severity = policy.thresholds(state.location).severity(drift, max(expected, snap.on_hand))
    if severity is None:
        return Reconciliation(MATCH, drift, None)  # within tolerance (corrected all the same)
    alert = Alert(
        alert_id=f"drift:{snap.event_id}", kind="DRIFT", severity=severity, sku=state.sku,
        location=state.location, as_of=snap.as_of_ms, detected_at=now_ms, expected=expected,
        observed=snap.on_hand, difference=drift, source_system=snap.source_system,
        snapshot_id=snap.snapshot_id, action=action, corrected=action == REBASE, version=state.version,
        moved_by=moved, correlation_id=snap.correlation_id,
    )
    return Reconciliation(DRIFT, drift, alert)


def oversold(state: KeyState, shortfall: int, available: int, promised: int, now_ms: int) -> Alert:
    """Shortfall turned positive: more is promised (reserved + safety stock) than is available."""
    return Alert(
        alert_id=f"oversold:{state.sku}@{state.location}:{state.version}", kind="OVERSOLD", severity=CRITICAL,
        sku=state.sku, location=state.location, as_of=state.max_event_ms, detected_at=now_ms,
        expected=promised, observed=available, difference=-shortfall, version=state.version,
        moved_by=_moved(state.history[-10:]),
    )
