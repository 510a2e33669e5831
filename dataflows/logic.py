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
about 9 % of the flow's CPU in ``python -m loadtest.bench.flowbench``): a key keeps the bytes it was
last packed to and a journal of the batches and timers applied since, with the clock and read
progress each one used; going back is unpacking those bytes and applying the journal again,
which gives the same state. The journal is cut (the state packed) every ``JOURNAL_MAX`` entries
and at every snapshot, so it stays short.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from bytewax.operators import StatefulBatchLogic

from dataflows import metrics
from dataflows.effects import (
    FOLD_STEP,
    NEWEST_EVENT_MS,
    Effects,
    FoldContext,
    Moment,
    Output,
    count_band,
    count_event,
    count_late,
    note_newest_event,
)
from dataflows.guard import OUT_OF_RANGE, STEP_ERROR, OutOfRange, out_of_range
from dataflows.redis_sink import LINEAGE
from dataflows.republish import REPUBLISH
from dataflows.timers import Timers, refused
from state.bands import BandChange, band_of
from state.events import Event, InventorySnapshot, SafetyStockSet, TransferSent, kafka_key, make_key
from state.fold import AVAILABLE, DUPLICATE, LATE, KeyState, apply
from state.limits import MAX_FIGURE, MAX_QTY
from state.packing import pack, unpack
from state.position import FORMULAS, position

log = logging.getLogger(__name__)
_QTY, _FIGURE = MAX_QTY, MAX_FIGURE

JOURNAL_MAX = 1024  # journal items (events, and 3 per batch) kept before the state is packed anyway


class PositionLogic(Timers, StatefulBatchLogic[Event, Output, bytes]):
    """Applies each batch of a key's events and emits the new position once if anything changed.

    Between epochs a key's state is kept as its snapshot's bytes: Bytewax asks for a snapshot of
    every key touched in an epoch, so the bytes are made anyway (``state.packing``), and a key at
    rest then costs its ~225 bytes instead of ~1.4 KB of objects (``python -m loadtest.bench.memory``).
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
        if self._republish and self.state is not None:
            REPUBLISH.register(make_key(self.state.sku, self.state.location))
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
                log.exception("step %s failed on %s event_id=%s correlation_id=%s; the event goes to the "
                              "dead-letter topic", FOLD_STEP, kafka_key(event.sku, event.location), event.event_id,
                              event.correlation_id)
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
        return moment[1]

    def _batch(self, values: list[Event], fx: Effects, moment: Moment) -> list[Output]:
        st = self.state
        if st is None:
            first = values[0]
            assert first.sku is not None  # a location-wide control reaches a key as a copy with the key's sku
            st = self.state = KeyState(first.sku, first.location)
        before = st.version
        ctx = self._ctx
        now = moment[0]
        now_ms = int(now * 1000)
        if LINEAGE.enabled:
            st.fresh = []  # the changes this batch applies, for the key's lineage in Redis (_publish)
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
                count_event(fx, topic, "SNAPSHOT", outcome != DUPLICATE)
                if outcome != DUPLICATE:
                    st.pending += ((now_ms, event),)
            elif type(event) is SafetyStockSet:
                if not event.location_wide:  # a location's copies are counted once, by its directory
                    count_event(fx, topic, "SAFETY_STOCK_SET", outcome != DUPLICATE)
            else:
                count_event(fx, topic, event.event_type, outcome != DUPLICATE)
            if outcome == LATE:
                fx.append((count_late, topic))
        out: list[Output] = []
        if st.pending or st.next_expiry is not None:
            self._due(st, now_ms, out, fx, moment)
        if st.version != before:
            self._publish(out, now, fx, event_driven=True)
        if st.short_since is not None:
            self._confirm_short(st, now_ms, out, fx, moment)
        st.fresh = None
        return out

    def _publish(self, out: list[Output], now: float, fx: Effects, event_driven: bool = False) -> None:
        """The key's position, plus an oversold alert and a band change when those happened."""
        st = self.state
        assert st is not None
        ctx = self._ctx
        pos = position(st, ctx.safety.for_state(st), int(now * 1000), ctx.formula)
        out.append(pos)
        if st.fresh:  # handed to the Redis sink with this position once the batch is accepted
            fx.append((LINEAGE.add, (pos.key, st.fresh)))
            st.fresh = []
        if event_driven:
            fx.append((metrics.EVENT_LAG.observe, max(0.0, now - st.max_event_ms / 1000)))
        if st.max_event_ms > NEWEST_EVENT_MS[0]:
            fx.append((note_newest_event, st.max_event_ms))
        if pos.oversold != self._oversold:
            fx.append((self._oversold_now, pos.oversold))
        if pos.shortfall <= 0:
            st.short, st.short_since = False, None
        elif not st.short and st.short_since is None:
            st.short_since = (pos.updated_at, st.max_event_ms)  # confirmed by _confirm_short
        band = band_of(pos.atp, ctx.low_stock_atp)
        if band != st.band:
            out.append(BandChange(st.sku, st.location, st.band, band, pos.atp, pos.version, pos.as_of, pos.updated_at))
            fx.append((count_band, band))
            st.band = band

    def snapshot(self) -> bytes:
        # Bytes are immutable, as Bytewax requires of snapshots; the state object is not.
        if self.state is None:
            return self._packed if self._packed is not None else pack(None)
        self._notify = self.notify_at()
        self._packed = pack(self.state)
        self.state = None
        self._journal = None
        return self._packed
