"""Public response and request models (separate from the stored Redis hashes)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError

from projection.codec import MAX_SAFE_INT, Unreadable, epoch_ms, safe_int

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
Id = Annotated[str, Field(pattern=ID_PATTERN, examples=["SKU-00042"])]
MAX_QUERY_ITEMS = 1000


class Quantities(BaseModel):
    atp: int = Field(description="formula 1: max(0, available_qty - reserved - safety_stock); "
                     "formula 2 adds inbound")
    available_qty: int
    on_hand: int
    reserved: int
    non_sellable: int
    inbound: int
    safety_stock: int
    shortfall: int = Field(description="max(0, reserved + safety_stock - available_qty)")


class Availability(Quantities):
    sku: str
    location: str
    version: int = Field(description="Per-key monotonic")
    as_of: datetime | None = Field(description="Event time of the newest applied event (UTC); null when the key "
                                   "has had no stock event yet (e.g. only a safety-stock control)")
    updated_at: datetime = Field(description="When the dataflow computed this position (UTC)")
    watermark: datetime | None = Field(
        None, description="The pipeline's watermark (UTC): every input event logged before it is reflected in "
                          "this answer (docs/http-api.md, Freshness); null while the dataflow has not worked one "
                          "out (or runs without a recovery store)")
    lag_ms: int | None = Field(description="now - watermark, in milliseconds: how far behind the input logs this "
                                           "answer may be (a quiet key is not stale); null when watermark is")
    formula_version: int = Field(1, description="The ATP formula version that computed this position")
    demand_per_min_5m: float = Field(0.0, description="Units reserved per minute, last 5 one-minute windows")
    demand_per_min_60m: float = Field(0.0, description="Units reserved per minute, last 60 one-minute windows")
    stockout_eta_minutes: float | None = Field(
        None, description="atp / demand_per_min_5m: minutes until ATP runs out at that pace; null without demand")

    @classmethod
    def from_stored(cls, stored: dict[str, Any], now_ms: int, watermark_ms: int | None) -> Availability:
        return cls(**fields_of(stored, now_ms, watermark_ms))


def fields_of(stored: dict[str, Any], now_ms: int, watermark_ms: int | None) -> dict[str, Any]:
    """An ``Availability``'s fields from a stored position (``projection.codec.from_hash``): the
    stored fields as they are (a hash written before a field existed gets its default), the times
    as UTC datetimes, and the pipeline's watermark and lag added."""
    as_of = stored["as_of"]
    return {**stored, "as_of": _utc(as_of) if as_of else None, "updated_at": _utc(stored["updated_at"]),
            "watermark": None if watermark_ms is None else _utc(watermark_ms),
            "lag_ms": None if watermark_ms is None else max(0, now_ms - watermark_ms)}


class GroupMember(BaseModel):
    location: str
    version: int = Field(description="The member position's version that the group's sums include")


class GroupAvailability(Availability):
    """A location group's position of one SKU, summed by the dataflow: ``location`` is the group."""

    members: list[GroupMember]

    @classmethod
    def from_group(cls, stored: dict[str, Any], now_ms: int, watermark_ms: int | None) -> GroupAvailability:
        try:
            members = [GroupMember(location=loc, version=safe_int("members.version", v))
                       for loc, v in json.loads(stored["members"])]
        except Unreadable:
            raise
        except (KeyError, TypeError, ValueError, RecursionError):  # ValidationError is a ValueError
            raise Unreadable("members is not a JSON list of [location, version]") from None
        return cls(**Availability.from_stored(stored, now_ms, watermark_ms).model_dump(), members=members)


class UnreadableLocation(BaseModel):
    location: str
    code: Literal["position_unreadable"] = "position_unreadable"
    message: str


class SkuAvailability(BaseModel):
    sku: str
    locations: list[Availability]
    total: Quantities = Field(description="Network view: each quantity summed over the locations "
                                          "(with ?group=: the group's sums, as computed by the dataflow)")
    group: GroupAvailability | None = Field(
        None, description="With ?group=: the group's position, with the member versions it sums")
    unreadable: list[UnreadableLocation] = Field(
        default_factory=list, description="Locations whose stored position cannot be served: left out of "
                                          "locations and of the network total")
    restricted_to: list[str] | None = Field(
        None, description="Set when the API key may read only some locations: the ones it may read. The "
                          "locations and the total are then over those only.")


class QueryItem(BaseModel):
    sku: Id
    location: Id


class QueryRequest(BaseModel):
    items: list[QueryItem] = Field(min_length=1, max_length=MAX_QUERY_ITEMS)


class ErrorInfo(BaseModel):
    code: str = Field(examples=["not_found"])
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    """Every error answer: ``{"error": {"code", "message", "details"?}}``."""

    error: ErrorInfo


class QueryResult(BaseModel):
    sku: str
    location: str
    found: bool = Field(description="A readable position was found (false for an unknown key and for an "
                                    "unreadable one: see error)")
    availability: Availability | None = None
    error: ErrorInfo | None = Field(None, description="Set when the key's stored position cannot be served "
                                                      "(code position_unreadable), or when the API key may not "
                                                      "read its location (code forbidden); availability is then null")


class QueryResponse(BaseModel):
    results: list[QueryResult]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _utc(ms: int) -> datetime:
    """Epoch milliseconds as a UTC datetime, exactly (no float); ``Unreadable`` outside 1970-9999."""
    return _EPOCH + timedelta(milliseconds=ms if type(ms) is int and 0 <= ms <= 253_402_300_799_999
                              else epoch_ms("time", ms))


class StockChange(BaseModel):
    event_id: str
    event_type: str
    effective_at: datetime = Field(description="When it took effect (event time; the window's edge if it came late)")
    change: Literal["delta", "set_available", "set_on_hand"] = Field(
        description="delta; set_available (a COUNT); set_on_hand (a snapshot taken as the truth)")
    available: int = Field(description="The change of AVAILABLE, or the absolute figure set")
    non_sellable: int = Field(description="The change of the non-sellable statuses")


class LineageEntry(BaseModel):
    """One change behind a position (GET /v1/availability/{sku}/{location}/explain)."""

    event_id: str = Field(description="The input event's id; an expiry names the order line")
    event_type: str = Field(description="A warehouse event type, SNAPSHOT (a rebase), SAFETY_STOCK_SET or "
                                        "SAFETY_STOCK_CLEARED (a control), or EXPIRY (a reservation that lapsed)")
    effective_at: datetime = Field(description="When it took effect (event time; the window's edge if it came late; "
                                               "an expiry: when the reservation lapsed)")
    change: Literal["delta", "set_available", "set_on_hand", "control", "expiry"] = Field(
        description="delta: quantity is the change of AVAILABLE; set_available (a COUNT) and set_on_hand (a "
                    "snapshot taken as the truth): the absolute figure set; control: the safety stock set "
                    "(0 when cleared); expiry: the units no longer reserved")
    quantity: int = Field(description="The quantity effect, as ``change`` says")
    non_sellable: int = Field(description="The change of the non-sellable statuses")
    source: str | None = Field(description="The emitting system (the event's source); null for an expiry")
    correlation_id: str | None = Field(description="The event's correlation_id; null when it had none")
    version: int = Field(description="The key's version that applied it")

    @classmethod
    def from_stored(cls, e: dict[str, Any]) -> LineageEntry:
        """An entry as ``projection.codec.read_lineage`` reads it (times in epoch milliseconds)."""
        return cls(**{**e, "effective_at": _utc(e["effective_at"])})


class Explanation(BaseModel):
    position: Availability = Field(description="The current position, as GET /v1/availability/{sku}/{location}")
    changes: list[LineageEntry] = Field(
        description="The newest changes behind it, newest first (at most 32; within what the key keeps)")


class DriftAlert(BaseModel):
    alert_id: str = Field(description="Stable across re-deliveries")
    kind: Literal["DRIFT", "OVERSOLD"]
    severity: Literal["warning", "critical"]
    sku: str
    location: str
    as_of: datetime = Field(description="Event time the figures refer to")
    detected_at: datetime
    expected: int = Field(description="DRIFT: the stream's on-hand as of as_of; OVERSOLD: reserved + safety stock")
    observed: int = Field(description="DRIFT: the snapshot's on-hand; OVERSOLD: available units")
    difference: int = Field(description="observed - expected")
    source_system: str | None = None
    snapshot_id: str | None = None
    action: Literal["alert", "rebase"] | None = Field(
        None, description="DRIFT: alert only, or rebase (the stream took the snapshot as the truth)")
    corrected: bool = False
    version: int
    moved_by: list[StockChange] = Field(description="The stock changes at or before as_of, newest last")

    @classmethod
    def from_stored(cls, a: dict[str, Any]) -> DriftAlert:
        moved = [StockChange(**{**m, "effective_at": _utc(m["effective_at"])}) for m in a["moved_by"]]
        return cls(**{**a, "as_of": _utc(a["as_of"]), "detected_at": _utc(a["detected_at"]), "moved_by": moved})


def parse_alert(body: bytes | str) -> DriftAlert:
    """A stored alert (JSON) as served, or ``Unreadable``: not JSON, not an alert, a field missing or
    of the wrong type, a time outside 1970-9999, or an integer beyond 2**53 - 1 in magnitude.
    Fields this version does not know (a newer layout) are ignored."""
    try:
        a = json.loads(body)
        if not isinstance(a, dict) or not isinstance(a.get("moved_by"), list):
            raise Unreadable("not an alert record (a JSON object with moved_by)")
        _check_ints(a)
        return DriftAlert.from_stored(a)
    except Unreadable:
        raise
    except ValidationError as exc:
        first = exc.errors()[0]
        raise Unreadable(f"alert field {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    except (KeyError, TypeError, ValueError, RecursionError) as exc:  # JSON and UTF-8 errors are ValueErrors
        raise Unreadable(f"not a readable alert: {type(exc).__name__}: {exc}"[:200]) from None


def _check_ints(value: Any) -> None:
    if isinstance(value, dict):
        for v in value.values():
            _check_ints(v)
    elif isinstance(value, list):
        for v in value:
            _check_ints(v)
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SAFE_INT:
        raise Unreadable("an alert figure is beyond 2**53 - 1 in magnitude")


class UnreadableAlert(BaseModel):
    entry: str = Field(description="The alert's index entry (KIND|sku@location) or its kind")
    code: Literal["alert_unreadable"] = "alert_unreadable"
    message: str


class AlertList(BaseModel):
    alerts: list[DriftAlert]
    unreadable: list[UnreadableAlert] = Field(
        default_factory=list, description="Alerts met while listing whose stored record cannot be served "
                                          "(skipped; at most limit)")


class KeyAlerts(BaseModel):
    sku: str
    location: str
    alerts: list[DriftAlert]
    unreadable: list[UnreadableAlert] = Field(
        default_factory=list, description="The key's alerts whose stored record cannot be served")
