"""The timers of the fold step: reservations that lapse, and snapshots whose reconciliation waits.

A mixin of ``dataflows.logic.PositionLogic`` (it uses that class's state and its ``_publish`` and
``_commit``); kept apart because the timed half of the step reads differently from the per-event half.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bytewax.operators import StatefulBatchLogic

from dataflows import metrics
from dataflows.effects import EPOCH, FOLD_STEP, Effects, FoldContext, Moment, Output, count_alert, count_reconciled
from dataflows.guard import OUT_OF_RANGE, STEP_ERROR, out_of_range
from dataflows.guard import refused as _refused
from dataflows.kafka import DeadLetter
from dataflows.redis_sink import LINEAGE
from dataflows.republish import REPUBLISH
from state import drift
from state.events import Event, make_key
from state.fold import KeyState, expire
from state.position import position

log = logging.getLogger(__name__)


def refused(event: Event, reason: str, message: str, error_class: str, step: str, topic: str | None,
            effects: Effects | None = None) -> DeadLetter:
    """``dataflows.guard.refused``, with the event's correlation_id for the dead letter's headers."""
    dl = _refused(event, reason, message, error_class, step, topic, effects)
    return dl if event.correlation_id is None else replace(dl, correlation_id=event.correlation_id)


class Timers:
    """When the key wants to be woken, and what it does then."""

    # What the timers use of PositionLogic: its attributes (set in its __init__, slots there) and,
    # declared for the type checker only, its methods.
    _ctx: FoldContext
    state: KeyState | None
    _notify: datetime | None  # what notify_at answered when the state was packed
    _republish: bool

    if TYPE_CHECKING:
        def _live(self) -> None: ...
        def _commit(self, fx: Effects) -> None: ...
        def _checkpoint(self) -> None: ...
        def _journaled(self, values: list[Event] | None, moment: Moment) -> None: ...
        def _rewind(self) -> None: ...
        def _progress(self, moment: Moment) -> int: ...
        def _publish(self, out: list[Output], now: float, fx: Effects, event_driven: bool = False) -> None: ...

    def notify_at(self) -> datetime | None:
        if self._republish:
            return EPOCH  # any past time: "now"
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
        return None if due is None else datetime.fromtimestamp(due / 1000, UTC)

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
        if LINEAGE.enabled:
            st.fresh = []  # expiries and rebases, for the key's lineage (see PositionLogic._batch)
        self._due(st, now_ms, out, fx, moment)
        if self._republish or st.version != before:
            self._republish = False
            self._publish(out, now, fx)
        if st.short_since is not None:
            self._confirm_short(st, now_ms, out, fx, moment)
        st.fresh = None
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
            fresh = len(st.fresh) if st.fresh is not None else 0
            result = drift.reconcile(st, snap, ctx.drift, ctx.lateness_ms, now_ms)
            # Each field of a snapshot is in range, but its rebase can still take a figure out (an
            # on-hand of -10^13 under open reservations): that snapshot is refused, alone.
            why = out_of_range([position(st, ctx.safety.for_state(st), 0, ctx.formula), result.alert])
            if why is not None:
                st.version, st.history, st.buckets = undo
                if st.fresh is not None:
                    del st.fresh[fresh:]  # the refused rebase's entry
                out.append(refused(snap, OUT_OF_RANGE, why, "OutOfRange", FOLD_STEP, None, fx))
                continue
            fx.append((count_reconciled, (snap.source_system, result.outcome)))
            if result.drift is not None:
                fx.append((metrics.DRIFT_UNITS.observe, abs(result.drift)))
            if result.alert is not None:
                fx.append((count_alert, ("DRIFT", result.alert.severity, snap.source_system, result.alert.location)))
                out.append(result.alert)
        st.pending = tuple(waiting)

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
        assert st.short_since is not None  # the callers check it
        since, event_ms = st.short_since
        if not (st.stock_ms >= event_ms or self._past_is_in(since, event_ms, now_ms, self._progress(moment))):
            return
        st.short_since = None
        st.short = True
        ctx = self._ctx
        pos = position(st, ctx.safety.for_state(st), now_ms, ctx.formula)
        alert = drift.oversold(st, pos.shortfall, pos.available_qty, pos.reserved + pos.safety_stock, now_ms)
        fx.append((count_alert, ("OVERSOLD", alert.severity, "stream", alert.location)))
        out.append(alert)
