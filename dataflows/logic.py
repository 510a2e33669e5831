"""The Bytewax adapter around the pure fold: one instance per sku@location key."""

from __future__ import annotations

import pickle
import time
from datetime import datetime, timezone
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bytewax.operators import StatefulBatchLogic

from dataflows import metrics
from dataflows.republish import REPUBLISH
from state.events import Event, InventorySnapshot, TransferSent, make_key
from state.fold import AVAILABLE, KeyState, apply
from state.position import Position, position
from state.safety import SafetyStock


@dataclass(frozen=True)
class FoldContext:
    """What the fold needs besides events: settings, and where each event type was read from."""

    dedup_window_ms: int
    safety: SafetyStock
    topic_of: Mapping[type, str]
    clock: Callable[[], float] = field(default=time.time)
    formula: int = 1  # the ATP formula version (state.position.FORMULAS)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_counters: dict[tuple[str, str, bool], Any] = {}
_newest_event_ms = [0]  # process-wide, for the last-event gauge


def _count(topic: str, event_type: str, applied: bool) -> None:
    child = _counters.get((topic, event_type, applied))
    if child is None:
        outcome = "applied" if applied else "duplicate"
        child = _counters[(topic, event_type, applied)] = metrics.EVENTS.labels(topic, event_type, outcome)
    child.inc()


class PositionLogic(StatefulBatchLogic[Event, Position, bytes]):
    """Applies each batch of a key's events and emits the new position once if anything changed."""

    def __init__(self, ctx: FoldContext, resume: bytes | None) -> None:
        self._ctx = ctx
        self.state: KeyState | None = pickle.loads(resume) if resume is not None else None
        self._oversold = bool(self.state and self.state.buckets[AVAILABLE] < 0)
        # Re-publishing a lost keyspace: every resumed key emits its position at once.
        self._republish = REPUBLISH.active and self.state is not None
        if self._republish:
            REPUBLISH.register(make_key(self.state.sku, self.state.location))  # type: ignore[union-attr]
        metrics.STATE_KEYS.inc()
        if self._oversold:
            metrics.OVERSOLD.inc()

    def on_batch(self, values: list[Event]) -> tuple[list[Position], bool]:
        st = self.state
        if st is None:
            st = self.state = KeyState(values[0].sku, values[0].location)
        before = st.version
        ctx = self._ctx
        for event in values:
            applied = apply(st, event, ctx.dedup_window_ms)
            if type(event) is not TransferSent:  # the far side of a transfer is not an input event
                etype = "SNAPSHOT" if type(event) is InventorySnapshot else event.event_type  # type: ignore[union-attr]
                _count(ctx.topic_of[type(event)], etype, applied)
        if st.version == before:
            return [], StatefulBatchLogic.RETAIN
        return [self._position(event_driven=True)], StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return _EPOCH if self._republish else None  # any past time: "now"

    def on_notify(self) -> tuple[list[Position], bool]:
        self._republish = False
        return [self._position()], StatefulBatchLogic.RETAIN

    def _position(self, event_driven: bool = False) -> Position:
        st = self.state
        assert st is not None
        ctx = self._ctx
        now = ctx.clock()
        pos = position(st, ctx.safety.for_key(st.sku, st.location), int(now * 1000), ctx.formula)
        if event_driven:
            metrics.EVENT_LAG.observe(max(0.0, now - st.max_event_ms / 1000))
        if st.max_event_ms > _newest_event_ms[0]:
            _newest_event_ms[0] = st.max_event_ms
            metrics.LAST_EVENT.set(st.max_event_ms / 1000)
        if pos.oversold != self._oversold:
            self._oversold = pos.oversold
            metrics.OVERSOLD.inc() if pos.oversold else metrics.OVERSOLD.dec()
        return pos

    def snapshot(self) -> bytes:
        # Bytes are immutable, as Bytewax requires of snapshots; the state object is not.
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)
