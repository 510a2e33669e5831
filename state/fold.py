"""The ATP fold: how one key's state changes with each event. Deterministic; no I/O, no clock.

Order independence across topics and keys comes from the shape of the state:
- bucket changes other than COUNT are deltas and commute; COUNT and the deltas it must not erase
  share one key on one topic (wms), whose order Kafka keeps;
- a line keeps ``reserved`` (absolute, from the ordered orders topic) apart from ``shipped``
  (a sum from the wms topic), so a SHIP before its RESERVE is simply remembered;
- a transfer keeps ``sent - received``, a sum, so a TRANSFER_IN before its TRANSFER_OUT is too.
"""

from __future__ import annotations

from state.events import (
    STATUS_INDEX,
    Event,
    InventorySnapshot,
    OrderLineEvent,
    TransferSent,
    WarehouseEvent,
)

AVAILABLE = STATUS_INDEX["AVAILABLE"]
_MIN_PRUNE = 64


class Line:
    """One order line's reservation at this key."""

    __slots__ = ("reserved", "shipped", "released", "last_ms")

    def __init__(self) -> None:
        self.reserved = 0
        self.shipped = 0
        self.released = False
        self.last_ms = 0

    def open_qty(self) -> int:
        return 0 if self.released else max(0, self.reserved - self.shipped)

    def closed(self) -> bool:
        return self.released or (self.reserved > 0 and self.shipped >= self.reserved)

    def __getstate__(self) -> tuple[int, int, bool, int]:
        return (self.reserved, self.shipped, self.released, self.last_ms)

    def __setstate__(self, s: tuple[int, int, bool, int]) -> None:
        self.reserved, self.shipped, self.released, self.last_ms = s


class KeyState:
    """Everything the stream knows about one sku@location."""

    __slots__ = (
        "sku", "location", "buckets", "lines", "transfers", "reserved", "inbound",
        "seen", "version", "max_event_ms", "last_snapshot", "prune_at",
    )

    def __init__(self, sku: str, location: str) -> None:
        self.sku = sku
        self.location = location
        self.buckets = [0, 0, 0, 0]  # indexed by STATUS_INDEX
        self.lines: dict[str, Line] = {}
        self.transfers: dict[str, int] = {}  # transfer_id -> sent - received (0 is dropped)
        self.reserved = 0  # sum of open line reservations, kept incrementally
        self.inbound = 0  # sum of max(0, sent - received), kept incrementally
        self.seen: dict[str, int] = {}  # applied event_id -> occurred_ms, for de-duplication
        self.version = 0  # applied events; per-key monotonic
        self.max_event_ms = 0
        self.last_snapshot: InventorySnapshot | None = None
        self.prune_at = _MIN_PRUNE

    def __getstate__(self) -> tuple[object, ...]:
        return tuple(getattr(self, s) for s in self.__slots__)

    def __setstate__(self, values: tuple[object, ...]) -> None:
        for slot, value in zip(self.__slots__, values):
            setattr(self, slot, value)


def apply(state: KeyState, event: Event, dedup_window_ms: int) -> bool:
    """Apply one event routed to this key; False when its ``event_id`` was already applied here."""
    seen = state.seen
    if event.event_id in seen:
        return False
    seen[event.event_id] = event.occurred_ms
    state.version += 1
    if event.occurred_ms > state.max_event_ms:
        state.max_event_ms = event.occurred_ms
    if type(event) is WarehouseEvent:
        _warehouse(state, event)
    elif type(event) is OrderLineEvent:
        _order_line(state, event)
    elif type(event) is TransferSent:
        _transfer(state, event.transfer_id, event.qty)
    elif type(event) is InventorySnapshot:
        state.last_snapshot = event
    else:  # pragma: no cover - the decoder only makes the types above
        raise TypeError(f"not an event: {event!r}")
    if len(seen) >= state.prune_at:
        prune(state, dedup_window_ms)
    return True


def prune(state: KeyState, window_ms: int) -> None:
    """Forget ids and closed lines older than the window (event time); amortised O(1) per event."""
    cutoff = state.max_event_ms - window_ms
    state.seen = {k: t for k, t in state.seen.items() if t >= cutoff}
    stale = [k for k, line in state.lines.items() if line.closed() and line.last_ms < cutoff]
    for k in stale:
        del state.lines[k]
    state.prune_at = max(_MIN_PRUNE, 2 * len(state.seen))


def _line(state: KeyState, line_id: str) -> Line:
    line = state.lines.get(line_id)
    if line is None:
        line = state.lines[line_id] = Line()
    return line


def _warehouse(state: KeyState, ev: WarehouseEvent) -> None:
    b = state.buckets
    t = ev.event_type
    if t in ("RECEIPT", "RETURN"):
        b[STATUS_INDEX[ev.to_status]] += ev.qty  # type: ignore[index]
    elif t == "SHIP":
        b[AVAILABLE] -= ev.qty
        line = _line(state, ev.order_line_id)  # type: ignore[arg-type]
        before = line.open_qty()
        line.shipped += ev.qty
        line.last_ms = max(line.last_ms, ev.occurred_ms)
        state.reserved += line.open_qty() - before
    elif t == "SHORT_PICK" or t == "TRANSFER_OUT":
        b[AVAILABLE] -= ev.qty
    elif t == "ADJUST":
        b[AVAILABLE] += ev.qty
    elif t == "COUNT":
        b[AVAILABLE] = ev.qty
    elif t == "STATUS_MOVE":
        b[STATUS_INDEX[ev.from_status]] -= ev.qty  # type: ignore[index]
        b[STATUS_INDEX[ev.to_status]] += ev.qty  # type: ignore[index]
    elif t == "TRANSFER_IN":
        b[AVAILABLE] += ev.qty
        _transfer(state, ev.transfer_id, -ev.qty)  # type: ignore[arg-type]


def _transfer(state: KeyState, transfer_id: str, delta: int) -> None:
    before = state.transfers.get(transfer_id, 0)
    after = before + delta
    if after == 0:
        state.transfers.pop(transfer_id, None)  # exact: only sent - received matters
    else:
        state.transfers[transfer_id] = after
    state.inbound += max(0, after) - max(0, before)


def _order_line(state: KeyState, ev: OrderLineEvent) -> None:
    line = _line(state, ev.order_line_id)
    before = line.open_qty()
    if ev.event_type == "RESERVE":
        line.reserved = ev.qty
        line.released = False
    else:
        line.released = True
    line.last_ms = max(line.last_ms, ev.occurred_ms)
    state.reserved += line.open_qty() - before
