"""The domain events, validated from decoded records (Avro dicts or canonical JSON).

Validation is hand-written rather than pydantic because it runs once per event on the hot path.
For the same reason the events are slotted dataclasses but not ``frozen``: a frozen dataclass's
``__init__`` sets each field through ``object.__setattr__``, 8x slower (1.73 against 0.22 us for
the 17 fields of a ``Position``). They are values all the same: nothing changes one once it is made
(``dataclasses.replace`` makes a copy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from sys import intern
from typing import Any, TypeVar, final

from core.contract import ID_RE as ID_RE
from state import limits
from state.errors import InvalidEvent

STATUSES = ("AVAILABLE", "QUARANTINE", "DAMAGED", "HOLD")
STATUS_INDEX = {s: i for i, s in enumerate(STATUSES)}
WAREHOUSE_TYPES = frozenset(
    {"RECEIPT", "SHIP", "SHORT_PICK", "ADJUST", "COUNT", "STATUS_MOVE", "TRANSFER_OUT", "TRANSFER_IN", "RETURN"}
)
ORDER_TYPES = frozenset({"RESERVE", "RELEASE"})
SOURCE_SYSTEMS = frozenset({"ERP", "WMS"})
MAX_EVENT_ID = 200
# Every event carries ``src``: the input record it was decoded from, opaque to the fold. When the
# dataflow refuses an event after decoding (a sum out of range, an error in a step), that record
# goes to the dead-letter topic unchanged. It is not part of a key's state: packing leaves it out,
# so a snapshot or control kept in the state has none after a restart.
# ``source`` and ``correlation_id`` are lineage: opaque to the figures, kept with the key's history
# (state.fold), named in alerts, dead letters and log lines.
# The event types are ``final``: the fold and the flow tell them apart with ``type(event) is ...``.


def make_key(sku: str, location: str) -> str:
    """The Kafka key and state key of one position: ``{sku}@{location}``."""
    return f"{sku}@{location}"


@final
@dataclass(slots=True)
class WarehouseEvent:
    event_id: str
    occurred_ms: int
    sku: str
    location: str
    event_type: str
    qty: int  # COUNT: counted_qty
    from_status: str | None = None
    to_status: str | None = None
    order_line_id: str | None = None
    transfer_id: str | None = None
    other_location: str | None = None  # TRANSFER_OUT: to_location; TRANSFER_IN: from_location
    source: str = ""  # the emitting system (lineage: kept with the key's history, shown by explain)
    correlation_id: str | None = None  # the caller's id for the business action (lineage)
    src: Any = field(default=None, compare=False, repr=False)  # the input record (see above)


@final
@dataclass(slots=True)
class OrderLineEvent:
    event_id: str
    occurred_ms: int
    sku: str
    location: str
    event_type: str
    order_line_id: str
    qty: int
    expires_ms: int | None = None
    source: str = ""  # the emitting system (lineage: kept with the key's history, shown by explain)
    correlation_id: str | None = None  # the caller's id for the business action (lineage)
    src: Any = field(default=None, compare=False, repr=False)  # the input record (see above)


@final
@dataclass(slots=True)
class InventorySnapshot:
    event_id: str
    occurred_ms: int
    sku: str
    location: str
    snapshot_id: str
    on_hand: int
    as_of_ms: int
    source_system: str
    source: str = ""  # the emitting system (lineage: kept with the key's history, shown by explain)
    correlation_id: str | None = None  # the caller's id for the business action (lineage)
    src: Any = field(default=None, compare=False, repr=False)  # the input record (see above)


@final
@dataclass(slots=True)
class TransferSent:
    """The far side of a TRANSFER_OUT: units on their way to ``location`` (the receiving key)."""

    event_id: str
    occurred_ms: int
    sku: str
    location: str
    transfer_id: str
    qty: int
    source: str = ""  # the emitting system (lineage: kept with the key's history, shown by explain)
    correlation_id: str | None = None  # the caller's id for the business action (lineage)
    src: Any = field(default=None, compare=False, repr=False)  # the input record (see above)


@final
@dataclass(slots=True)
class SafetyStockSet:
    """A safety-stock control: for one item (``sku`` set) or a location's default (``sku`` None,
    until the dataflow hands a copy to each key of the location: then ``sku`` is that key's and
    ``location_wide`` stays True). ``safety_stock`` None clears the control."""

    event_id: str
    occurred_ms: int
    sku: str | None
    location: str
    safety_stock: int | None
    location_wide: bool
    source: str = ""  # the emitting system (lineage: kept with the key's history, shown by explain)
    correlation_id: str | None = None  # the caller's id for the business action (lineage)
    src: Any = field(default=None, compare=False, repr=False)  # the input record (see above)

    @property
    def stamp(self) -> tuple[int, str]:
        """Order of controls of one scope: the newest ``occurred_at`` wins, ties by ``event_id``."""
        return (self.occurred_ms, self.event_id)


Event = WarehouseEvent | OrderLineEvent | InventorySnapshot | TransferSent | SafetyStockSet
_E = TypeVar("_E", WarehouseEvent, OrderLineEvent, InventorySnapshot, SafetyStockSet)


def _str(rec: dict[str, Any], name: str) -> str:
    value = rec.get(name)
    if value is None or value == "":
        raise InvalidEvent("missing_field", f"{name} is required")
    if not isinstance(value, str):
        raise InvalidEvent("invalid_field", f"{name} must be a string, got {type(value).__name__}")
    return value


# Ids that matched ID_RE: SKUs and locations come back on every event, and checking one that is
# remembered takes about 0.09 us against 0.26. Emptied when full, so any number of distinct ids
# stays bounded.
_VALID_IDS: set[str] = set()
_MAX_VALID_IDS = 65_536


def _id(rec: dict[str, Any], name: str) -> str:
    value = rec.get(name)
    if type(value) is str and value in _VALID_IDS:
        return value
    value = _str(rec, name)
    if ID_RE.fullmatch(value) is None:
        raise InvalidEvent("invalid_id", f"{name}={value!r} must match ^[A-Za-z0-9][A-Za-z0-9._-]{{0,63}}$")
    if len(_VALID_IDS) >= _MAX_VALID_IDS:
        _VALID_IDS.clear()
    _VALID_IDS.add(value)
    return value


def _int(rec: dict[str, Any], name: str) -> int:
    value = rec.get(name)
    if value is None:
        raise InvalidEvent("missing_field", f"{name} is required")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise InvalidEvent("invalid_field", f"{name} must be an integer, got {value!r}")


def _status(rec: dict[str, Any], name: str, default: str | None = None) -> str:
    value = rec.get(name) or default
    if value is None:
        raise InvalidEvent("missing_field", f"{name} is required")
    if value not in STATUS_INDEX:
        raise InvalidEvent("invalid_field", f"{name}={value!r} must be one of {', '.join(STATUSES)}")
    return value


def _identity(rec: dict[str, Any]) -> tuple[str, int]:
    event_id = _str(rec, "event_id")
    if len(event_id) > MAX_EVENT_ID:
        raise InvalidEvent("invalid_id", f"event_id is {len(event_id)} characters; at most {MAX_EVENT_ID}")
    if not event_id.isprintable():  # control characters: also what keeps the fold's dedup identities apart
        raise InvalidEvent("invalid_id", f"event_id={event_id!r} has control characters")
    occurred = _int(rec, "occurred_at")
    if occurred <= 0:
        raise InvalidEvent("invalid_field", f"occurred_at={occurred} must be a positive epoch-millis time")
    return event_id, occurred


def _lineage_text(rec: dict[str, Any], name: str) -> str | None:
    """A lineage field as kept: never a reason to refuse the event (it changes no figure). A value
    that is not a string is dropped; one with control characters or over MAX_EVENT_ID characters
    is kept printable (each control character a '?') and cut there, so it can be stored and shown."""
    value = rec.get(name)
    if type(value) is str and len(value) <= MAX_EVENT_ID and value.isprintable():
        return value  # the common case: one check
    return printable(value) if isinstance(value, str) else None


def printable(value: str) -> str:
    """``value`` as lineage keeps it: its first MAX_EVENT_ID characters, each control character a '?'."""
    value = value[:MAX_EVENT_ID]
    return value if value.isprintable() else "".join(c if c.isprintable() else "?" for c in value)


def _lineage(event: _E, rec: dict[str, Any]) -> _E:
    """Set the event's ``source`` and ``correlation_id`` from its record (both optional here: a
    re-driven canonical JSON record may lack ``source``)."""
    source = _lineage_text(rec, "source")
    event.source = intern(source) if source else ""  # a few systems: one string each in the history
    event.correlation_id = _lineage_text(rec, "correlation_id") or None
    return event


def _common(rec: dict[str, Any]) -> tuple[str, int, str, str]:
    return *_identity(rec), _id(rec, "sku"), _id(rec, "location")


def _positive(rec: dict[str, Any], name: str, event_type: str) -> int:
    qty = _int(rec, name)
    if qty <= 0:
        raise InvalidEvent("invalid_quantity", f"{event_type} needs {name} > 0, got {qty}")
    if qty > limits.MAX_QTY:
        limits.quantity(name, qty)
    return qty


def warehouse_event(rec: dict[str, Any]) -> WarehouseEvent:
    return _lineage(_warehouse_event(rec), rec)


def _warehouse_event(rec: dict[str, Any]) -> WarehouseEvent:
    event_id, occurred, sku, location = _common(rec)
    etype = rec.get("event_type")
    if etype not in WAREHOUSE_TYPES:
        raise InvalidEvent("invalid_field", f"event_type={etype!r} is not a warehouse event type")
    base = (event_id, occurred, sku, location, etype)
    if etype == "RECEIPT":
        return WarehouseEvent(*base, _positive(rec, "qty", etype), to_status=_status(rec, "to_status", "AVAILABLE"))
    if etype in ("SHIP", "SHORT_PICK"):
        return WarehouseEvent(*base, _positive(rec, "qty", etype), order_line_id=_str(rec, "order_line_id"))
    if etype == "ADJUST":
        qty = _int(rec, "qty")
        if qty == 0:
            raise InvalidEvent("invalid_quantity", "ADJUST needs qty != 0")
        _str(rec, "reason")
        return WarehouseEvent(*base, limits.quantity("qty", qty))
    if etype == "COUNT":
        counted = _int(rec, "counted_qty")
        if counted < 0:
            raise InvalidEvent("invalid_quantity", f"COUNT needs counted_qty >= 0, got {counted}")
        return WarehouseEvent(*base, limits.quantity("counted_qty", counted, limits.MAX_FIGURE))
    if etype == "STATUS_MOVE":
        qty = _positive(rec, "qty", etype)
        src, dst = _status(rec, "from_status"), _status(rec, "to_status")
        if src == dst:
            raise InvalidEvent("invalid_field", f"STATUS_MOVE from_status and to_status are both {src}")
        return WarehouseEvent(*base, qty, from_status=src, to_status=dst)
    if etype in ("TRANSFER_OUT", "TRANSFER_IN"):
        qty = _positive(rec, "qty", etype)
        other = _id(rec, "to_location" if etype == "TRANSFER_OUT" else "from_location")
        if other == location:
            raise InvalidEvent("invalid_field", f"{etype} between {location} and itself")
        return WarehouseEvent(*base, qty, transfer_id=_str(rec, "transfer_id"), other_location=other)
    # RETURN
    return WarehouseEvent(*base, _positive(rec, "qty", etype), to_status=_status(rec, "to_status"))


def order_line_event(rec: dict[str, Any]) -> OrderLineEvent:
    event_id, occurred, sku, location = _common(rec)
    etype = rec.get("event_type")
    if etype not in ORDER_TYPES:
        raise InvalidEvent("invalid_field", f"event_type={etype!r} is not an order-line event type")
    _str(rec, "order_id")
    _str(rec, "channel")
    line = _str(rec, "order_line_id")
    qty = 0
    if etype == "RESERVE":
        qty = limits.quantity("qty", _int(rec, "qty"))
        if qty < 0:
            raise InvalidEvent("invalid_quantity", f"RESERVE needs qty >= 0, got {qty}")
    expires = rec.get("expires_at") if etype == "RESERVE" else None  # a RELEASE's is meaningless: ignored
    if expires is not None:
        expires = limits.expiry(_int(rec, "expires_at"))
    return _lineage(OrderLineEvent(event_id, occurred, sku, location, etype, line, qty, expires), rec)


def inventory_snapshot(rec: dict[str, Any]) -> InventorySnapshot:
    event_id, occurred, sku, location = _common(rec)
    system = rec.get("source_system")
    if system not in SOURCE_SYSTEMS:
        raise InvalidEvent("invalid_field", f"source_system={system!r} must be ERP or WMS")
    on_hand = limits.quantity("on_hand", _int(rec, "on_hand"), limits.MAX_FIGURE)
    snap = InventorySnapshot(event_id, occurred, sku, location, _str(rec, "snapshot_id"), on_hand, _int(rec, "as_of"), system)
    return _lineage(snap, rec)


def safety_stock_set(rec: dict[str, Any]) -> SafetyStockSet:
    event_id, occurred = _identity(rec)
    location = _id(rec, "location")
    sku = _id(rec, "sku") if rec.get("sku") is not None else None
    value = rec.get("safety_stock")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise InvalidEvent("invalid_quantity", f"safety_stock must be an integer >= 0 or null, got {value!r}")
    if value is not None:
        limits.quantity("safety_stock", value)
    return _lineage(SafetyStockSet(event_id, occurred, sku, location, value, sku is None), rec)


def kafka_key(sku: str | None, location: str) -> str:
    """The Kafka key an input record carries: ``{sku}@{location}``, or the location alone for a
    location-wide control (no ``sku``)."""
    return location if sku is None else f"{sku}@{location}"


PARSERS: dict[str, Callable[[dict[str, Any]], Event]] = {
    "WarehouseEvent": warehouse_event,
    "OrderLineEvent": order_line_event,
    "InventorySnapshot": inventory_snapshot,
    "SafetyStockSet": safety_stock_set,
}
"""Record name -> the validator that turns its decoded dict into a domain event."""


def fan_out(event: Event) -> list[tuple[str, Event]]:
    """The state keys an event changes: its own, plus the receiving key of a TRANSFER_OUT."""
    assert event.sku is not None, "a location-wide control has no key: the dataflow copies it to each key"
    own = (make_key(event.sku, event.location), event)
    if isinstance(event, WarehouseEvent) and event.event_type == "TRANSFER_OUT":
        assert event.other_location is not None and event.transfer_id is not None
        sent = TransferSent(
            event.event_id, event.occurred_ms, event.sku, event.other_location, event.transfer_id, event.qty,
            event.source, event.correlation_id, event.src,
        )
        return [own, (make_key(event.sku, event.other_location), sent)]
    return [own]
