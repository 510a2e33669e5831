"""The ATP fold: how one key's state changes with each event. Deterministic; no I/O, no clock.

Order independence across topics and keys comes from the shape of the state:
- bucket changes other than COUNT are deltas and commute; the absolute ones (a COUNT, or a
  snapshot taken as the truth) are ordered by event time through the key's recent history, so a
  late COUNT rebases AVAILABLE as of its ``occurred_at`` and the newer deltas are re-applied;
- a line keeps ``reserved`` (absolute, from the ordered orders topic) apart from ``shipped``
  (a sum from the wms topic), so a SHIP before its RESERVE is simply remembered;
- a transfer keeps ``sent - received``, a sum, so a TRANSFER_IN before its TRANSFER_OUT is too.

Event time: each stock change takes effect at its ``occurred_at``, or at the lateness window's
edge (the key's newest stock-change time minus the window) when it is older than that. Changes inside
the window are kept in ``history``; older ones are folded into ``base``, so state stays bounded.
"""

from __future__ import annotations

from bisect import bisect_right
from operator import attrgetter
from sys import intern
from typing import Any

from state.events import (
    STATUS_INDEX,
    Event,
    InventorySnapshot,
    OrderLineEvent,
    SafetyStockSet,
    TransferSent,
    WarehouseEvent,
    printable,
)

AVAILABLE = STATUS_INDEX["AVAILABLE"]
_MIN_PRUNE = 64
LATENESS_MS = 15 * 60_000  # the default lateness window (event time)
MINUTE_MS = 60_000
DEMAND_MINUTES = 60  # tumbling one-minute windows of demand kept per key

# apply() outcomes
DUPLICATE, APPLIED, LATE = 0, 1, 2

# History entry kinds: a delta of AVAILABLE (and of the non-sellable total), an absolute AVAILABLE
# (COUNT), an absolute on-hand (a snapshot taken as the truth: AVAILABLE = on_hand - non-sellable).
DELTA, SET_AVAILABLE, SET_ON_HAND = 0, 1, 2
# Lineage only (never in ``history``: they move no bucket): a safety-stock control that took effect
# (value: the safety stock, 0 when cleared) and a reservation that lapsed (value: the units released).
CONTROL, EXPIRY = 3, 4
# (effective_ms, seq, kind, value, non_sellable_delta, event_id, event_type, source, correlation_id);
# seq is the key's version when the change was applied. Before state format 5 the last two were absent.
Entry = tuple[int, int, int, int, int, str, str, str, "str | None"]


class Line:
    """One order line's reservation at this key."""

    __slots__ = ("reserved", "shipped", "released", "last_ms", "expires_ms")

    def __init__(self) -> None:
        self.reserved = 0
        self.shipped = 0
        self.released = False
        self.last_ms = 0
        self.expires_ms: int | None = None  # a soft reservation lapses then (wall clock)

    def open_qty(self) -> int:
        return 0 if self.released else max(0, self.reserved - self.shipped)

    def closed(self) -> bool:
        return self.released or (self.reserved > 0 and self.shipped >= self.reserved)

    def __getstate__(self) -> tuple[int, int, bool, int, int | None]:
        return (self.reserved, self.shipped, self.released, self.last_ms, self.expires_ms)

    def __setstate__(self, s: tuple[Any, ...]) -> None:
        if len(s) == 5:
            self.reserved, self.shipped, self.released, self.last_ms, self.expires_ms = s
            return
        self.expires_ms = None  # snapshots written before expiry existed have four fields
        for slot, value in zip(self.__slots__, s):
            setattr(self, slot, value)


class KeyState:
    """Everything the stream knows about one sku@location.

    ``pending``, ``band``, ``short`` and ``short_since`` belong to the dataflow adapter
    (``dataflows.logic``); they live here so a restart resumes them with the rest: snapshots
    waiting to be reconciled, the last published band, and whether the key's shortfall was
    alerted or waits to be confirmed.
    """

    __slots__ = (
        "sku", "location", "buckets", "lines", "transfers", "reserved", "inbound",
        "seen", "version", "max_event_ms", "last_snapshot", "prune_at",
        "history", "base", "next_expiry", "pending", "band", "short", "stock_ms", "demand",
        "short_since", "safety_item", "safety_location", "fresh",
    )

    def __init__(self, sku: str, location: str) -> None:
        # Interned: a SKU's keys, a location's keys and the location directory share one string
        # each, where every decoded event brings its own copies.
        self.sku = intern(sku)
        self.location = intern(location)
        self.buckets = [0, 0, 0, 0]  # indexed by STATUS_INDEX
        # The containers a key may never need start as None (or the shared empty tuple) and are
        # made on first use: at a million keys every empty dict costs 64 MB (see loadtest.bench.memory).
        self.lines: dict[str, Line] | None = None
        self.transfers: dict[str, int] | None = None  # transfer_id -> sent - received (0 is dropped)
        self.reserved = 0  # sum of open line reservations, kept incrementally
        self.inbound = 0  # sum of max(0, sent - received), kept incrementally
        self.seen: dict[str, int] = {}  # applied event_id -> occurred_ms, for de-duplication
        self.version = 0  # applied changes; per-key monotonic
        self.max_event_ms = 0
        self.last_snapshot: InventorySnapshot | None = None
        self.prune_at = _MIN_PRUNE
        self.history: list[Entry] = []  # stock changes inside the lateness window, in effect order
        self.base: tuple[int, int] = (0, 0)  # AVAILABLE and non-sellable before the first history entry
        self.next_expiry: int | None = None
        self.pending: tuple[tuple[int, InventorySnapshot], ...] = ()  # (arrival wall ms, snapshot)
        self.band: str | None = None
        self.short = False
        # Newest wms event time: the lateness window follows the stock changes only, so a snapshot
        # or an order read ahead of the wms topic (other topics, other paces) never makes them late.
        self.stock_ms = 0
        self.demand: dict[int, int] | None = None  # event-time minute -> units newly reserved (last 60 minutes)
        # Short but not alerted yet: (arrival wall ms, the key's newest event time) when the
        # shortfall appeared; the alert waits until the stock changes before then are in.
        self.short_since: tuple[int, int] | None = None
        # The newest safety-stock controls for this item and for its location's default.
        self.safety_item: SafetyStockSet | None = None
        self.safety_location: SafetyStockSet | None = None
        # Lineage of the changes applied since the dataflow last took them (dataflows.logic), in the
        # order applied: the history's entries plus CONTROL and EXPIRY ones. None: nobody collects.
        self.fresh: list[Entry] | None = None

    def __getstate__(self) -> tuple[object, ...]:
        return (*_SLOT_VALUES(self), _LAYOUT)

    def __setstate__(self, values: tuple[Any, ...]) -> None:
        if len(values) == _LAYOUT_LEN and values[-1] == _LAYOUT:  # the current layout: the fast path
            for slot, value in zip(_SLOTS, values):
                setattr(self, slot, value)
            return
        sku, location = values[0], values[1]
        KeyState.__init__(self, sku, location)  # defaults for slots an older snapshot lacks
        for slot, value in zip(self.__slots__[2:], values[2:]):
            setattr(self, slot, value)
        if len(values) < 13:  # written before the history existed: all of it is in the buckets
            b = self.buckets
            self.base = (b[AVAILABLE], sum(b) - b[AVAILABLE])
            self.stock_ms = self.max_event_ms
        # Written before the containers were made on first use: the same state, stored leaner.
        available, other = self.base
        self.base = (available, other)
        self.pending = tuple(self.pending)
        self.lines = self.lines or None
        self.transfers = self.transfers or None
        self.demand = self.demand or None
        self.history = upgrade_entries(self.history)
        self.fresh = None  # a layout-2 snapshot's last value is its layout number, zipped onto this slot


def upgrade_entries(history: list[Any]) -> list[Entry]:
    """History entries of a state written before they carried ``source`` and ``correlation_id``."""
    return [e if len(e) == 9 else (*e, "", None) for e in history]


_SLOTS = KeyState.__slots__
_SLOT_VALUES = attrgetter(*_SLOTS)  # one C call: a snapshot pickles every touched key
# Snapshots end with the layout's number since lean containers (None or () until first used);
# older ones have one value per slot of their time and are converted on load.
_LAYOUT = 2
_LAYOUT_LEN = len(_SLOTS) + 1


# Dedup identity: (record type, event_id). A wms event's id is kept as it is (the most common
# kind: no copy); the others' get a prefix with a control character, which a valid event_id never
# holds (state.events), so two record types never share an identity.
ID_TAGS: dict[type, str] = {
    OrderLineEvent: "O\x1f", InventorySnapshot: "S\x1f", SafetyStockSet: "C\x1f", TransferSent: "T\x1f"}


def identity(event: Event) -> str:
    """What de-duplicates ``event`` at a key: its ``event_id`` within its record type."""
    if type(event) is WarehouseEvent:
        return event.event_id
    return ID_TAGS[type(event)] + event.event_id


def apply(state: KeyState, event: Event, dedup_window_ms: int, lateness_ms: int = LATENESS_MS) -> int:
    """Apply one event routed to this key: ``DUPLICATE`` when its record type's ``event_id`` was
    already applied here, ``LATE`` for a stock change older than the lateness window, else ``APPLIED``."""
    seen = state.seen
    ident = event.event_id if type(event) is WarehouseEvent else ID_TAGS[type(event)] + event.event_id
    if ident in seen:
        return DUPLICATE
    seen[ident] = event.occurred_ms
    state.version += 1
    late = False
    if event.occurred_ms > state.max_event_ms and type(event) is not SafetyStockSet:
        # A control's time is when it was issued, not when stock moved: it never ages the events.
        state.max_event_ms = event.occurred_ms
    if type(event) is WarehouseEvent:
        edge = state.stock_ms - lateness_ms
        late = event.occurred_ms < edge
        if event.occurred_ms > state.stock_ms:
            state.stock_ms = event.occurred_ms
        _warehouse(state, event, max(edge, event.occurred_ms))
        _prune_history(state, lateness_ms)
    elif type(event) is OrderLineEvent:
        _order_line(state, event)
    elif type(event) is TransferSent:
        _transfer(state, event.transfer_id, event.qty)
    elif type(event) is InventorySnapshot:
        state.last_snapshot = event
    elif type(event) is SafetyStockSet:
        _control(state, event)
    else:  # pragma: no cover - the decoder only makes the types above
        raise TypeError(f"not an event: {event!r}")
    if len(seen) >= state.prune_at:
        prune(state, dedup_window_ms)
    return LATE if late else APPLIED


def _control(state: KeyState, ctl: SafetyStockSet) -> None:
    """The newest control of each scope wins, whatever the order they arrive in."""
    slot = "safety_location" if ctl.location_wide else "safety_item"
    current = getattr(state, slot)
    if current is None or ctl.stamp > current.stamp:
        setattr(state, slot, ctl)
        if state.fresh is not None:
            state.fresh.append((ctl.occurred_ms, state.version, CONTROL, ctl.safety_stock or 0, 0, ctl.event_id,
                                "SAFETY_STOCK_SET" if ctl.safety_stock is not None else "SAFETY_STOCK_CLEARED",
                                ctl.source, ctl.correlation_id))


def prune(state: KeyState, window_ms: int) -> None:
    """Forget ids and closed lines older than the window (event time); amortised O(1) per event."""
    cutoff = state.max_event_ms - window_ms
    state.seen = {k: t for k, t in state.seen.items() if t >= cutoff}
    lines = state.lines
    if lines:
        for k in [k for k, line in lines.items() if line.closed() and line.last_ms < cutoff]:
            del lines[k]
        if not lines:
            state.lines = None
    state.prune_at = max(_MIN_PRUNE, 2 * len(state.seen))


# -- event time ---------------------------------------------------------------------------------

def _record(state: KeyState, effective_ms: int, kind: int, value: int, other: int,
            ev: WarehouseEvent | InventorySnapshot, etype: str) -> None:
    """Add one stock change to the history and bring AVAILABLE up to date.

    ``other`` (the change of the non-sellable total) is already in the buckets: those statuses
    only ever move by deltas, which commute. AVAILABLE is what an absolute change can reset.
    """
    h, b = state.history, state.buckets
    entry: Entry = (effective_ms, state.version, kind, value, other, ev.event_id, etype, ev.source, ev.correlation_id)
    if state.fresh is not None:
        state.fresh.append(entry)
    if not h or effective_ms >= h[-1][0]:  # in order (seq only grows): the common case
        h.append(entry)
        if kind == DELTA:
            b[AVAILABLE] += value
        elif kind == SET_AVAILABLE:
            b[AVAILABLE] = value
        else:
            b[AVAILABLE] = value - (b[1] + b[2] + b[3])
        return
    i = bisect_right(h, (effective_ms, state.version))
    h.insert(i, entry)
    if kind == DELTA and all(e[2] == DELTA for e in h[i + 1:]):
        b[AVAILABLE] += value  # deltas commute
    else:  # an absolute change is involved: fold the window again from its base
        b[AVAILABLE] = _fold_window(state, None)[0]


def _fold_window(state: KeyState, until_ms: int | None) -> tuple[int, int]:
    """AVAILABLE and the non-sellable total after the history entries up to ``until_ms`` (all: None)."""
    available, other = state.base
    for t, _, kind, value, d_other, *_ in state.history:
        if until_ms is not None and t > until_ms:
            break
        other += d_other
        if kind == DELTA:
            available += value
        elif kind == SET_AVAILABLE:
            available = value
        else:
            available = value - other
    return available, other


def _prune_history(state: KeyState, lateness_ms: int) -> None:
    """Fold the entries that fell out of the window into ``base``; O(1) when nothing did."""
    h = state.history
    edge = state.stock_ms - lateness_ms
    if not h or h[0][0] >= edge:
        return
    n = 1
    while n < len(h) and h[n][0] < edge:
        n += 1
    state.base = _fold_window(state, h[n - 1][0])  # h[n-1] is the last entry older than the edge
    del h[:n]


def window_edge(state: KeyState, lateness_ms: int) -> int:
    """The oldest event time the key's history still answers for."""
    return state.stock_ms - lateness_ms


def on_hand_at(state: KeyState, as_of_ms: int, lateness_ms: int) -> int | None:
    """Physical on-hand (every status) as of ``as_of_ms``; None when that is older than the window."""
    if as_of_ms < window_edge(state, lateness_ms):
        return None
    available, other = _fold_window(state, as_of_ms)
    return available + other


def history_around(state: KeyState, as_of_ms: int, n: int = 10) -> list[Entry]:
    """The last ``n`` stock changes at or before ``as_of_ms``: what moved the stream's figure there."""
    upto = bisect_right(state.history, (as_of_ms, 1 << 62))
    return state.history[max(0, upto - n):upto]


def rebase(state: KeyState, snap: InventorySnapshot, lateness_ms: int) -> None:
    """Take a snapshot's on-hand as the truth as of its ``as_of``; the newer changes are re-applied."""
    state.version += 1
    edge = window_edge(state, lateness_ms)
    _record(state, max(edge, snap.as_of_ms), SET_ON_HAND, snap.on_hand, 0, snap, "SNAPSHOT")


# -- reservations -------------------------------------------------------------------------------

def expire(state: KeyState, now_ms: int) -> list[str]:
    """Release the open lines whose ``expires_ms`` has passed; returns their ids."""
    if state.next_expiry is None or state.next_expiry > now_ms:
        return []
    released = []
    upcoming: int | None = None
    for line_id, line in (state.lines or {}).items():
        if line.expires_ms is None or line.open_qty() == 0:
            continue
        if line.expires_ms <= now_ms:
            if state.fresh is not None:
                state.fresh.append((line.expires_ms, state.version + 1, EXPIRY, line.open_qty(), 0,
                                    printable(line_id), "EXPIRY", "", None))
            state.reserved -= line.open_qty()
            line.released = True
            released.append(line_id)
        elif upcoming is None or line.expires_ms < upcoming:
            upcoming = line.expires_ms
    state.next_expiry = upcoming
    if released:
        state.version += 1
    return released


# -- per event type -----------------------------------------------------------------------------

def _line(state: KeyState, line_id: str) -> Line:
    lines = state.lines
    if lines is None:
        lines = state.lines = {}
    line = lines.get(line_id)
    if line is None:
        line = lines[line_id] = Line()
    return line


def _warehouse(state: KeyState, ev: WarehouseEvent, effective_ms: int) -> None:
    b = state.buckets
    t = ev.event_type
    if t in ("RECEIPT", "RETURN"):
        assert ev.to_status is not None  # state.events sets it for these types, as the ones below
        status = STATUS_INDEX[ev.to_status]
        if status == AVAILABLE:
            _record(state, effective_ms, DELTA, ev.qty, 0, ev, t)
        else:
            b[status] += ev.qty
            _record(state, effective_ms, DELTA, 0, ev.qty, ev, t)
    elif t == "SHIP":
        _record(state, effective_ms, DELTA, -ev.qty, 0, ev, t)
        assert ev.order_line_id is not None
        line = _line(state, ev.order_line_id)
        before = line.open_qty()
        line.shipped += ev.qty
        line.last_ms = max(line.last_ms, ev.occurred_ms)
        state.reserved += line.open_qty() - before
    elif t == "SHORT_PICK" or t == "TRANSFER_OUT":
        _record(state, effective_ms, DELTA, -ev.qty, 0, ev, t)
    elif t == "ADJUST":
        _record(state, effective_ms, DELTA, ev.qty, 0, ev, t)
    elif t == "COUNT":
        _record(state, effective_ms, SET_AVAILABLE, ev.qty, 0, ev, t)
    elif t == "STATUS_MOVE":
        assert ev.from_status is not None and ev.to_status is not None
        src, dst = STATUS_INDEX[ev.from_status], STATUS_INDEX[ev.to_status]
        d_available = (ev.qty if dst == AVAILABLE else 0) - (ev.qty if src == AVAILABLE else 0)
        d_other = (ev.qty if dst != AVAILABLE else 0) - (ev.qty if src != AVAILABLE else 0)
        if src != AVAILABLE:
            b[src] -= ev.qty
        if dst != AVAILABLE:
            b[dst] += ev.qty
        if d_available or d_other:
            _record(state, effective_ms, DELTA, d_available, d_other, ev, t)
    elif t == "TRANSFER_IN":
        _record(state, effective_ms, DELTA, ev.qty, 0, ev, t)
        assert ev.transfer_id is not None
        _transfer(state, ev.transfer_id, -ev.qty)


def _transfer(state: KeyState, transfer_id: str, delta: int) -> None:
    transfers = state.transfers
    if transfers is None:
        transfers = state.transfers = {}
    before = transfers.get(transfer_id, 0)
    after = before + delta
    if after == 0:
        transfers.pop(transfer_id, None)  # exact: only sent - received matters
        if not transfers:
            state.transfers = None
    else:
        transfers[transfer_id] = after
    state.inbound += max(0, after) - max(0, before)


def _order_line(state: KeyState, ev: OrderLineEvent) -> None:
    line = _line(state, ev.order_line_id)
    before = line.open_qty()
    if ev.event_type == "RESERVE":
        if ev.qty > line.reserved:  # demand: units newly reserved (a re-sent or lowered hold adds none)
            _demand(state, ev.occurred_ms, ev.qty - line.reserved)
        line.reserved = ev.qty
        line.released = False
        line.expires_ms = ev.expires_ms
        if ev.expires_ms is not None and (state.next_expiry is None or ev.expires_ms < state.next_expiry):
            state.next_expiry = ev.expires_ms
    else:
        line.released = True
    line.last_ms = max(line.last_ms, ev.occurred_ms)
    state.reserved += line.open_qty() - before


def _demand(state: KeyState, occurred_ms: int, units: int) -> None:
    minute = occurred_ms // MINUTE_MS
    oldest = state.max_event_ms // MINUTE_MS - DEMAND_MINUTES + 1
    if minute < oldest:
        return  # older than every window a rate is read from
    d = state.demand
    if d is None:
        d = state.demand = {}
    if minute not in d and len(d) >= DEMAND_MINUTES:
        for m in [m for m in d if m < oldest]:
            del d[m]
    d[minute] = d.get(minute, 0) + units


def demand_rates(state: KeyState) -> tuple[float, float]:
    """Units reserved per minute over the last 5 and the last 60 one-minute windows (event time),
    up to and including the minute of the key's newest event; one pass over the windows."""
    newest = state.max_event_ms // MINUTE_MS
    last5 = last60 = 0
    for minute, units in (state.demand or {}).items():
        age = newest - minute
        if 0 <= age < DEMAND_MINUTES:
            last60 += units
            if age < 5:
                last5 += units
    return last5 / 5, last60 / DEMAND_MINUTES
