"""The Bytewax adapter around the pure fold: one instance per sku@location key.

Besides the position it emits alerts (drift, oversold) and band changes, and it acts on the wall
clock through ``notify_at``: reservations that expire, snapshots waiting to be reconciled, and the
re-publish of a lost keyspace.

Guarded (``dataflows.guard``): a batch whose outputs would leave the contract's range, or that
raises, is applied again one event at a time from the key's state before it; each event that
still fails is a dead letter (``out_of_range`` or ``step_error``, step ``atp_fold``) and leaves
the key as it was. The metrics of a batch are counted once it is accepted (``Effects``), so a
refused batch counts nothing twice.

The state before a batch is found again without copying it on every batch (a copy, ``pack``, cost
about 9 % of the flow's CPU in ``python -m loadtest.flowbench``): a key keeps the bytes it was
last packed to and a journal of the batches and timers applied since, with the clock and read
progress each one used; going back is unpacking those bytes and applying the journal again,
which gives the same state. The journal is cut (the state packed) every ``JOURNAL_MAX`` entries
and at every snapshot, so it stays short.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Union

from bytewax.operators import StatefulBatchLogic

from dataflows import metrics
from dataflows.decode import DeadLetter
from dataflows.guard import OUT_OF_RANGE, STEP_ERROR, OutOfRange, out_of_range, refused
from dataflows.progress import STOCK_PROGRESS
from dataflows.republish import REPUBLISH
from state import drift
from state.bands import BandChange, band_of
from state.events import Event, InventorySnapshot, SafetyStockSet, TransferSent, make_key
from state.limits import MAX_FIGURE, MAX_QTY
from state.fold import AVAILABLE, DUPLICATE, LATE, LATENESS_MS, KeyState, apply, expire
from state.packing import pack, unpack
from state.position import FORMULAS, Position, position
from state.safety import SafetyStock

log = logging.getLogger(__name__)
_QTY, _FIGURE = MAX_QTY, MAX_FIGURE

Output = Union[Position, drift.Alert, BandChange, DeadLetter]
FOLD_STEP = "atp_fold"
# The metric updates of a batch, applied once the batch is accepted: (function, its one argument).
Effects = list[tuple[Callable[[object], object], object]]
# What a batch or a timer read of the world: [wall clock (s), wms read progress (ms) once asked for].
Moment = list
JOURNAL_MAX = 1024  # journal items (events, and 3 per batch) kept before the state is packed anyway


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


def _late(topic: object) -> None:
    metrics.LATE_EVENTS.labels(topic).inc()


def _reconciled(labels: object) -> None:
    metrics.RECONCILIATIONS.labels(*labels).inc()  # type: ignore[misc]


def _alerted(labels: object) -> None:
    metrics.ALERTS.labels(*labels).inc()  # type: ignore[misc]


def _band(band: object) -> None:
    metrics.BAND_CHANGES.labels(band).inc()


def _newest_event(ms: object) -> None:
    if ms > _newest_event_ms[0]:  # type: ignore[operator]
        _newest_event_ms[0] = ms  # type: ignore[assignment]
        metrics.LAST_EVENT.set(ms / 1000)  # type: ignore[operator]


def _counted(fx: Effects, topic: str, event_type: str, applied: bool) -> None:
    fx.append((metrics.EVENTS.inc, (topic, event_type, "applied" if applied else "duplicate")))


class PositionLogic(StatefulBatchLogic[Event, Output, bytes]):
    """Applies each batch of a key's events and emits the new position once if anything changed.

    Between epochs a key's state is kept as its snapshot's bytes: Bytewax asks for a snapshot of
    every key touched in an epoch, so the bytes are made anyway (``state.packing``), and a key at
    rest then costs its ~225 bytes instead of ~1.4 KB of objects (``python -m loadtest.memory``).
    The next event of the key unpacks it (about 2 us, once per key and epoch).
    """

    # One per key: slots save 16 bytes a key over attribute storage (measured at 200,000 keys).
    __slots__ = ("_ctx", "_packed", "_notify", "state", "_oversold", "_republish", "_journal")

    def __init__(self, ctx: FoldContext, resume: bytes | None) -> None:
        self._ctx = ctx
        # The state as last packed: all of it while ``state`` is None, else where the journal starts.
        self._packed: bytes | None = None
        # What was applied since, flat (no container per batch: each one the collector would have to
        # walk): per batch its number of events, clock, read progress and events; per timer -1,
        # clock, progress. None: nothing since.
        self._journal: list[Any] | None = None
        self._notify: datetime | None = None  # what notify_at answered when the state was packed
        self.state: KeyState | None = unpack(resume) if resume is not None else None
        self._oversold = bool(self.state and self.state.buckets[AVAILABLE] < 0)
        # Re-publishing a lost keyspace: every resumed key emits its position at once.
        self._republish = REPUBLISH.active and self.state is not None
        self._packed = resume  # where a journal of this key starts
        if self._republish:
            REPUBLISH.register(make_key(self.state.sku, self.state.location))  # type: ignore[union-attr]
        elif self.state is not None:  # a resumed key stays packed until its next event
            self._notify = self.notify_at()
            self.state = None
        metrics.STATE_KEYS.inc()
        if self._oversold:
            metrics.OVERSOLD.inc()

    def _live(self) -> None:
        """Unpack a packed state; its bytes stay as the journal's start."""
        if self.state is None and self._packed is not None:
            self.state = unpack(self._packed)

    def _journaled(self, values: list[Event] | None, moment: Moment) -> None:
        journal = self._journal
        if journal is None:
            journal = self._journal = []
        elif len(journal) >= JOURNAL_MAX:
            self._checkpoint()
            return
        if values is None:
            journal += (-1, moment[0], moment[1])
        else:
            journal += (len(values), moment[0], moment[1], *values)

    def _checkpoint(self) -> None:
        self._packed = pack(self.state) if self.state is not None else None
        self._journal = None

    def _rewind(self) -> None:
        """Back to the state before the batch being applied: the packed bytes plus the journal."""
        self.state = unpack(self._packed) if self._packed is not None else None
        journal, i = self._journal or [], 0
        while i < len(journal):
            n, moment = journal[i], [journal[i + 1], journal[i + 2]]
            if n < 0:
                self._notified([], moment)
                i += 3
            else:
                self._batch(journal[i + 3:i + 3 + n], [], moment)
                i += 3 + n

    def _restore(self, before: bytes | None) -> None:
        self.state = unpack(before) if before is not None else None

    def on_batch(self, values: list[Event]) -> tuple[list[Output], bool]:
        self._live()
        moment: Moment = [self._ctx.clock(), None]
        fx: Effects = []
        try:
            out = self._batch(values, fx, moment)
            why = out_of_range(out)
        except Exception:  # noqa: BLE001 - found again, per event, below
            why = "raised"
        if why is None:
            self._commit(fx)
            self._journaled(values, moment)
            return out, StatefulBatchLogic.RETAIN
        self._rewind()
        out = self._one_by_one(values, moment)
        self._checkpoint()
        return out, StatefulBatchLogic.RETAIN

    def _one_by_one(self, values: list[Event], moment: Moment) -> list[Output]:
        """Apply a refused batch event by event: the ones that fail become dead letters."""
        out: list[Output] = []
        for event in values:
            mark = pack(self.state) if self.state is not None else None
            fx: Effects = []
            try:
                got = self._batch([event], fx, moment)
            except OutOfRange as exc:
                self._restore(mark)
                out.append(refused(event, OUT_OF_RANGE, str(exc), "OutOfRange", FOLD_STEP, self._topic(event)))
                continue
            except Exception as exc:  # noqa: BLE001 - one event's error is that event's, not the flow's
                log.exception("step %s failed on %s event_id=%s; the event goes to the dead-letter topic",
                              FOLD_STEP, make_key(event.sku, event.location), event.event_id)
                self._restore(mark)
                out.append(refused(event, STEP_ERROR, f"{type(exc).__name__}: {exc}", type(exc).__name__, FOLD_STEP,
                                   self._topic(event)))
                continue
            why = out_of_range(got)
            if why is not None:
                self._restore(mark)
                out.append(refused(event, OUT_OF_RANGE, why, "OutOfRange", FOLD_STEP, self._topic(event)))
                continue
            self._commit(fx)
            out.extend(got)
        return out

    def _topic(self, event: Event) -> str | None:
        """The input topic ``event`` was read from; None for the far side of a transfer."""
        if type(event) is SafetyStockSet and event.location_wide:
            return None  # the location's control was counted once, by its directory
        return self._ctx.topic_of.get(type(event))

    def _commit(self, fx: Effects) -> None:
        for fn, arg in fx:
            fn(arg)

    def _exact_range_check(self, st: KeyState) -> None:
        ctx = self._ctx
        safety = ctx.safety.for_state(st)
        why = out_of_range([position(st, safety, 0, ctx.formula)])
        if why is not None:
            raise OutOfRange(why)
        # Reservations lapse on a timer, with no event to refuse: ATP must stay in range once they
        # have (formula 2 adds inbound, so available + inbound is bounded too).
        lapsed = FORMULAS[ctx.formula](st.buckets[AVAILABLE], st.inbound, 0, safety)
        if lapsed > _FIGURE:
            raise OutOfRange(f"{make_key(st.sku, st.location)}: atp={lapsed} once the reservations lapse "
                             f"would leave the range ±{_FIGURE:.0e}")

    def _oversold_now(self, flag: object) -> None:
        if flag != self._oversold:
            self._oversold = bool(flag)
            metrics.OVERSOLD.inc() if flag else metrics.OVERSOLD.dec()

    def _progress(self, moment: Moment) -> int:
        """How far the wms topic was read when ``moment`` was taken (asked once, then kept)."""
        if moment[1] is None:
            moment[1] = self._ctx.stock_progress()
        return moment[1]  # type: ignore[no-any-return]

    def _batch(self, values: list[Event], fx: Effects, moment: Moment) -> list[Output]:
        st = self.state
        if st is None:
            st = self.state = KeyState(values[0].sku, values[0].location)
        before = st.version
        ctx = self._ctx
        now = moment[0]
        now_ms = int(now * 1000)
        for event in values:
            outcome = apply(st, event, ctx.dedup_window_ms, ctx.lateness_ms)
            b = st.buckets
            other = b[1] + b[2] + b[3]
            # Every figure of the position is within these (safety stock is at most MAX_QTY), so
            # the exact check runs only near the range's edge.
            if (abs(b[0]) + st.reserved + st.inbound + _QTY > _FIGURE or not -_FIGURE <= other <= _FIGURE
                    or not -_FIGURE <= b[0] + other <= _FIGURE):
                self._exact_range_check(st)
            if type(event) is TransferSent:
                continue  # the far side of a transfer is not an input event
            topic = ctx.topic_of[type(event)]
            if type(event) is InventorySnapshot:
                _counted(fx, topic, "SNAPSHOT", outcome != DUPLICATE)
                if outcome != DUPLICATE:
                    st.pending += ((now_ms, event),)
            elif type(event) is SafetyStockSet:
                if not event.location_wide:  # a location's copies are counted once, by its directory
                    _counted(fx, topic, "SAFETY_STOCK_SET", outcome != DUPLICATE)
            else:
                _counted(fx, topic, event.event_type, outcome != DUPLICATE)  # type: ignore[union-attr]
            if outcome == LATE:
                fx.append((_late, topic))
        out: list[Output] = []
        if st.pending or st.next_expiry is not None:
            self._due(st, now_ms, out, fx, moment)
        if st.version != before:
            self._publish(out, now, fx, event_driven=True)
        if st.short_since is not None:
            self._confirm_short(st, now_ms, out, fx, moment)
        return out

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
        self._live()
        republish = self._republish
        moment: Moment = [self._ctx.clock(), None]
        fx: Effects = []
        reason, error_class = OUT_OF_RANGE, "OutOfRange"
        try:
            out = self._notified(fx, moment)
            why = out_of_range(out)
        except Exception as exc:  # noqa: BLE001 - the key's waiting snapshots are dropped, below
            log.exception("step %s failed on a timer of %s", FOLD_STEP, self._key())
            why, reason, error_class = f"{type(exc).__name__}: {exc}", STEP_ERROR, type(exc).__name__
        if why is None:
            self._commit(fx)
            if republish:  # what the re-publish set is not in the journal (it replays without it)
                self._checkpoint()
            else:
                self._journaled(None, moment)
            return out, StatefulBatchLogic.RETAIN
        # Nothing was read that could be dead-lettered but the snapshots the timer reconciles: they
        # go, so the timer does not fail again every second. The key stays as it was.
        self._rewind()
        self._republish = republish
        st = self.state
        assert st is not None
        # Counted once already, as applied, when they arrived: not again as input events.
        dead: list[Output] = [refused(snap, reason, why, error_class, FOLD_STEP, None) for _, snap in st.pending]
        st.pending = ()
        if not dead:
            dead = self._put_off(st, int(moment[0] * 1000), why)
        self._checkpoint()
        return dead, StatefulBatchLogic.RETAIN

    def _put_off(self, st: KeyState, now_ms: int, why: str) -> list[Output]:
        """A timer failed with no snapshot to drop: what it was due for waits, so that it does not
        fire (and fail) again at once. A lapsed reservation is tried again after the reconcile
        timeout (at least a second); an unconfirmed shortfall is given up (the key's next event
        starts it again); a re-publish emits the key's position as it stands, without the timer's
        changes. Logged, and counted in ``atp_timer_failures_total``."""
        metrics.TIMER_FAILURES.labels(FOLD_STEP).inc()
        log.warning("timer of %s failed (%s); what it was due for is put off", self._key(), why)
        out: list[Output] = []
        if self._republish:
            self._republish = False
            pos = position(st, self._ctx.safety.for_state(st), now_ms, self._ctx.formula)
            if out_of_range([pos]) is None:
                out.append(pos)  # the sink ticks the key off when it is written
            else:
                REPUBLISH.written([self._key()])  # nothing publishable: the keyspace does not wait for it
        st.short_since = None
        if st.next_expiry is not None and st.next_expiry <= now_ms:
            st.next_expiry = now_ms + max(self._ctx.reconcile_timeout_ms, 1000)
        return out

    def _key(self) -> str:
        st = self.state
        return make_key(st.sku, st.location) if st is not None else "?"

    def _notified(self, fx: Effects, moment: Moment) -> list[Output]:
        st = self.state
        assert st is not None
        before = st.version
        out: list[Output] = []
        now = moment[0]
        now_ms = int(now * 1000)
        self._due(st, now_ms, out, fx, moment)
        if self._republish or st.version != before:
            self._republish = False
            self._publish(out, now, fx)
        if st.short_since is not None:
            self._confirm_short(st, now_ms, out, fx, moment)
        return out

    def _due(self, st: KeyState, now_ms: int, out: list[Output], fx: Effects, moment: Moment) -> None:
        """Expire lapsed reservations and reconcile the snapshots that are due."""
        released = expire(st, now_ms)
        if released:
            fx.append((metrics.RESERVATIONS_EXPIRED.inc, len(released)))
        if not st.pending:
            return
        ctx = self._ctx
        newest_change = st.history[-1][0] if st.history else 0
        read_to = self._progress(moment)
        waiting = []
        for arrival, snap in st.pending:
            # The snapshot's past is in when the key's own stock changes run past its as_of.
            if not (newest_change > snap.as_of_ms or self._past_is_in(arrival, snap.as_of_ms, now_ms, read_to)):
                waiting.append((arrival, snap))
                continue
            # What a rebase changes (drift.rebase): the version, one history entry, AVAILABLE. Kept
            # as copies, not packed: a pack of a busy key costs ~100 us, these ~1 us.
            undo = (st.version, st.history[:], st.buckets[:])
            result = drift.reconcile(st, snap, ctx.drift, ctx.lateness_ms, now_ms)
            # Each field of a snapshot is in range, but its rebase can still take a figure out (an
            # on-hand of -10^13 under open reservations): that snapshot is refused, alone.
            why = out_of_range([position(st, ctx.safety.for_state(st), 0, ctx.formula), result.alert])
            if why is not None:
                st.version, st.history, st.buckets = undo
                out.append(refused(snap, OUT_OF_RANGE, why, "OutOfRange", FOLD_STEP, None, fx))
                continue
            fx.append((_reconciled, (snap.source_system, result.outcome)))
            if result.drift is not None:
                fx.append((metrics.DRIFT_UNITS.observe, abs(result.drift)))
            if result.alert is not None:
                fx.append((_alerted, ("DRIFT", result.alert.severity, snap.source_system)))
                out.append(result.alert)
        st.pending = tuple(waiting)

    def _publish(self, out: list[Output], now: float, fx: Effects, event_driven: bool = False) -> None:
        """The key's position, plus an oversold alert and a band change when those happened."""
        st = self.state
        assert st is not None
        ctx = self._ctx
        pos = position(st, ctx.safety.for_state(st), int(now * 1000), ctx.formula)
        out.append(pos)
        if event_driven:
            fx.append((metrics.EVENT_LAG.observe, max(0.0, now - st.max_event_ms / 1000)))
        if st.max_event_ms > _newest_event_ms[0]:
            fx.append((_newest_event, st.max_event_ms))
        if pos.oversold != self._oversold:
            fx.append((self._oversold_now, pos.oversold))
        if pos.shortfall <= 0:
            st.short, st.short_since = False, None
        elif not st.short and st.short_since is None:
            st.short_since = (pos.updated_at, st.max_event_ms)  # confirmed by _confirm_short
        band = band_of(pos.atp, ctx.low_stock_atp)
        if band != st.band:
            out.append(BandChange(st.sku, st.location, st.band, band, pos.atp, pos.version, pos.as_of, pos.updated_at))
            fx.append((_band, band))
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

    def _confirm_short(self, st: KeyState, now_ms: int, out: list[Output], fx: Effects, moment: Moment) -> None:
        """Alert a shortfall once its past is in. Topics are read at their own paces, so a
        reservation can be read before the receipt that covered it: a shortfall that exists only
        in the reading order closes before it is confirmed and never raises an alert."""
        since, event_ms = st.short_since  # type: ignore[misc]
        if not (st.stock_ms >= event_ms or self._past_is_in(since, event_ms, now_ms, self._progress(moment))):
            return
        st.short_since = None
        st.short = True
        ctx = self._ctx
        pos = position(st, ctx.safety.for_state(st), now_ms, ctx.formula)
        alert = drift.oversold(st, pos.shortfall, pos.available_qty, pos.reserved + pos.safety_stock, now_ms)
        fx.append((_alerted, ("OVERSOLD", alert.severity, "stream")))
        out.append(alert)

    def snapshot(self) -> bytes:
        # Bytes are immutable, as Bytewax requires of snapshots; the state object is not.
        if self.state is None:
            return self._packed if self._packed is not None else pack(None)
        self._notify = self.notify_at()
        self._packed = pack(self.state)
        self.state = None
        self._journal = None
        return self._packed
