"""The Bytewax adapter around the pure fold: one instance per sku@location key.

Besides the position it emits alerts (drift, oversold) and band changes, and it acts on the wall
clock through ``notify_at``: reservations that expire, snapshots waiting to be reconciled, and the
re-publish of a lost keyspace.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Union

from bytewax.operators import StatefulBatchLogic

from dataflows import metrics
from dataflows.progress import STOCK_PROGRESS
from dataflows.republish import REPUBLISH
from state import drift
from state.bands import BandChange, band_of
from state.events import Event, InventorySnapshot, SafetyStockSet, TransferSent, make_key
from state.fold import AVAILABLE, DUPLICATE, LATE, LATENESS_MS, KeyState, apply, expire
from state.packing import pack, unpack
from state.position import Position, position
from state.safety import SafetyStock

Output = Union[Position, drift.Alert, BandChange]


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
    stock_progress: Callable[[], int] = field(default=STOCK_PROGRESS.get)  # see dataflows.progress


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_newest_event_ms = [0]  # process-wide, for the last-event gauge


def _count(topic: str, event_type: str, applied: bool) -> None:
    metrics.EVENTS.inc((topic, event_type, "applied" if applied else "duplicate"))


class PositionLogic(StatefulBatchLogic[Event, Output, bytes]):
    """Applies each batch of a key's events and emits the new position once if anything changed.

    Between epochs a key's state is kept as its snapshot's bytes: Bytewax asks for a snapshot of
    every key touched in an epoch, so the bytes are made anyway (``state.packing``), and a key at
    rest then costs its ~225 bytes instead of ~1.4 KB of objects (``python -m loadtest.memory``).
    The next event of the key unpacks it (about 2 us, once per key and epoch).
    """

    # One per key: slots save 16 bytes a key over attribute storage (measured at 200,000 keys).
    __slots__ = ("_ctx", "_packed", "_notify", "state", "_oversold", "_republish")

    def __init__(self, ctx: FoldContext, resume: bytes | None) -> None:
        self._ctx = ctx
        self._packed: bytes | None = None  # the state as its last snapshot, while ``state`` is None
        self._notify: datetime | None = None  # what notify_at answered when the state was packed
        self.state: KeyState | None = unpack(resume) if resume is not None else None
        self._oversold = bool(self.state and self.state.buckets[AVAILABLE] < 0)
        # Re-publishing a lost keyspace: every resumed key emits its position at once.
        self._republish = REPUBLISH.active and self.state is not None
        if self._republish:
            REPUBLISH.register(make_key(self.state.sku, self.state.location))  # type: ignore[union-attr]
        elif self.state is not None:  # a resumed key stays packed until its next event
            self._notify = self.notify_at()
            self._packed, self.state = resume, None
        metrics.STATE_KEYS.inc()
        if self._oversold:
            metrics.OVERSOLD.inc()

    def _unpack(self) -> KeyState | None:
        if self._packed is not None:
            self.state, self._packed = unpack(self._packed), None
        return self.state

    def on_batch(self, values: list[Event]) -> tuple[list[Output], bool]:
        st = self.state or self._unpack()
        if st is None:
            st = self.state = KeyState(values[0].sku, values[0].location)
        before = st.version
        ctx = self._ctx
        now = ctx.clock()
        now_ms = int(now * 1000)
        for event in values:
            outcome = apply(st, event, ctx.dedup_window_ms, ctx.lateness_ms)
            if type(event) is TransferSent:
                continue  # the far side of a transfer is not an input event
            topic = ctx.topic_of[type(event)]
            if type(event) is InventorySnapshot:
                _count(topic, "SNAPSHOT", outcome != DUPLICATE)
                if outcome != DUPLICATE:
                    st.pending += ((now_ms, event),)
            elif type(event) is SafetyStockSet:
                if not event.location_wide:  # a location's copies are counted once, by its directory
                    _count(topic, "SAFETY_STOCK_SET", outcome != DUPLICATE)
            else:
                _count(topic, event.event_type, outcome != DUPLICATE)  # type: ignore[union-attr]
            if outcome == LATE:
                metrics.LATE_EVENTS.labels(topic).inc()
        out: list[Output] = []
        if st.pending or st.next_expiry is not None:
            self._due(st, now_ms, out)
        if st.version != before:
            self._publish(out, now, event_driven=True)
        if st.short_since is not None:
            self._confirm_short(st, now_ms, out)
        return out, StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if self._republish:
            return _EPOCH  # any past time: "now"
        st = self.state
        if st is None:
            return self._notify  # packed (None for a key that never had state)
        waits = [a for a, _ in st.pending]
        if st.short_since is not None:
            waits.append(st.short_since[0])
        due = None
        if waits:
            ctx = self._ctx
            now_ms = int(ctx.clock() * 1000)
            # The next check of each wait: at its delay, then every delay (at least a second) until its timeout.
            delay, timeout = ctx.reconcile_delay_ms, ctx.reconcile_timeout_ms
            again = now_ms + max(delay, 1000)
            due = min(a + delay if now_ms < a + delay else min(a + timeout, again) for a in waits)
        if st.next_expiry is not None and (due is None or st.next_expiry < due):
            due = st.next_expiry
        return None if due is None else datetime.fromtimestamp(due / 1000, timezone.utc)

    def on_notify(self) -> tuple[list[Output], bool]:
        st = self.state or self._unpack()
        assert st is not None
        before = st.version
        out: list[Output] = []
        now = self._ctx.clock()
        now_ms = int(now * 1000)
        self._due(st, now_ms, out)
        if self._republish or st.version != before:
            self._republish = False
            self._publish(out, now)
        if st.short_since is not None:
            self._confirm_short(st, now_ms, out)
        return out, StatefulBatchLogic.RETAIN

    def _due(self, st: KeyState, now_ms: int, out: list[Output]) -> None:
        """Expire lapsed reservations and reconcile the snapshots that are due."""
        released = expire(st, now_ms)
        if released:
            metrics.RESERVATIONS_EXPIRED.inc(len(released))
        if not st.pending:
            return
        ctx = self._ctx
        newest_change = st.history[-1][0] if st.history else 0
        read_to = ctx.stock_progress()
        waiting = []
        for arrival, snap in st.pending:
            # The snapshot's past is in when the key's own stock changes run past its as_of.
            if not (newest_change > snap.as_of_ms or self._past_is_in(arrival, snap.as_of_ms, now_ms, read_to)):
                waiting.append((arrival, snap))
                continue
            result = drift.reconcile(st, snap, ctx.drift, ctx.lateness_ms, now_ms)
            metrics.RECONCILIATIONS.labels(snap.source_system, result.outcome).inc()
            if result.drift is not None:
                metrics.DRIFT_UNITS.observe(abs(result.drift))
            if result.alert is not None:
                metrics.ALERTS.labels("DRIFT", result.alert.severity, snap.source_system).inc()
                out.append(result.alert)
        st.pending = tuple(waiting)

    def _publish(self, out: list[Output], now: float, event_driven: bool = False) -> None:
        """The key's position, plus an oversold alert and a band change when those happened."""
        st = self.state
        assert st is not None
        ctx = self._ctx
        pos = position(st, ctx.safety.for_state(st), int(now * 1000), ctx.formula)
        out.append(pos)
        if event_driven:
            metrics.EVENT_LAG.observe(max(0.0, now - st.max_event_ms / 1000))
        if st.max_event_ms > _newest_event_ms[0]:
            _newest_event_ms[0] = st.max_event_ms
            metrics.LAST_EVENT.set(st.max_event_ms / 1000)
        if pos.oversold != self._oversold:
            self._oversold = pos.oversold
            metrics.OVERSOLD.inc() if pos.oversold else metrics.OVERSOLD.dec()
        if pos.shortfall <= 0:
            st.short, st.short_since = False, None
        elif not st.short and st.short_since is None:
            st.short_since = (pos.updated_at, st.max_event_ms)  # confirmed by _confirm_short
        band = band_of(pos.atp, ctx.low_stock_atp)
        if band != st.band:
            out.append(BandChange(st.sku, st.location, st.band, band, pos.atp, pos.version, pos.as_of, pos.updated_at))
            metrics.BAND_CHANGES.labels(band).inc()
            st.band = band

    def _past_is_in(self, arrival_ms: int, as_of_ms: int, now_ms: int, read_to: int) -> bool:
        """Whether the stock changes before ``as_of_ms`` have been read: every wms partition of
        the dataflow has passed it by the out-of-orderness bound (after a short wait), or at the
        latest the timeout ran out.

        A partition's event times are not in order: writers' clocks differ, and a hot key's
        events can be stamped ahead of the others'. Reading a partition past ``as_of`` therefore
        does not mean everything before ``as_of`` was read; reading it ``out_of_order_ms`` past
        does (a bounded-out-of-orderness watermark)."""
        ctx = self._ctx
        waited = now_ms - arrival_ms
        return waited >= ctx.reconcile_timeout_ms or (
            waited >= ctx.reconcile_delay_ms and read_to >= as_of_ms + ctx.out_of_order_ms)

    def _confirm_short(self, st: KeyState, now_ms: int, out: list[Output]) -> None:
        """Alert a shortfall once its past is in. Topics are read at their own paces, so a
        reservation can be read before the receipt that covered it: a shortfall that exists only
        in the reading order closes before it is confirmed and never raises an alert."""
        since, event_ms = st.short_since  # type: ignore[misc]
        if not (st.stock_ms >= event_ms or self._past_is_in(since, event_ms, now_ms, self._ctx.stock_progress())):
            return
        st.short_since = None
        st.short = True
        ctx = self._ctx
        pos = position(st, ctx.safety.for_state(st), now_ms, ctx.formula)
        alert = drift.oversold(st, pos.shortfall, pos.available_qty, pos.reserved + pos.safety_stock, now_ms)
        metrics.ALERTS.labels("OVERSOLD", alert.severity, "stream").inc()
        out.append(alert)

    def snapshot(self) -> bytes:
        # Bytes are immutable, as Bytewax requires of snapshots; the state object is not.
        if self.state is None:
            return self._packed if self._packed is not None else pack(None)
        self._notify = self.notify_at()
        self._packed = pack(self.state)
        self.state = None
        return self._packed
