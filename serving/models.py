"""Public response and request models (separate from the stored Redis hashes)."""

from __future__ import annotations

import json

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

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
    as_of: datetime = Field(description="Event time of the newest applied event (UTC)")
    updated_at: datetime = Field(description="When the dataflow computed this position (UTC)")
    lag_ms: int = Field(description="now - as_of, in milliseconds")
    formula_version: int = Field(1, description="The ATP formula version that computed this position")
    demand_per_min_5m: float = Field(0.0, description="Units reserved per minute, last 5 one-minute windows")
    demand_per_min_60m: float = Field(0.0, description="Units reserved per minute, last 60 one-minute windows")
    stockout_eta_minutes: float | None = Field(
        None, description="atp / demand_per_min_5m: minutes until ATP runs out at that pace; null without demand")

    @classmethod
    def from_stored(cls, stored: dict[str, Any], now_ms: int) -> "Availability":
        return cls(**fields_of(stored, now_ms))


def fields_of(stored: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """An ``Availability``'s fields from a stored position (``state.projection.from_hash``): the
    stored fields as they are (a hash written before a field existed gets its default), the times
    as UTC datetimes and the lag added."""
    return {**stored, "as_of": datetime.fromtimestamp(stored["as_of"] / 1000, timezone.utc),
            "updated_at": datetime.fromtimestamp(stored["updated_at"] / 1000, timezone.utc),
            "lag_ms": max(0, now_ms - stored["as_of"])}


class GroupMember(BaseModel):
    location: str
    version: int = Field(description="The member position's version that the group's sums include")


class GroupAvailability(Availability):
    """A location group's position of one SKU, summed by the dataflow: ``location`` is the group."""

    members: list[GroupMember]

    @classmethod
    def from_group(cls, stored: dict[str, Any], now_ms: int) -> "GroupAvailability":
        members = [GroupMember(location=loc, version=v) for loc, v in json.loads(stored["members"])]
        return cls(**Availability.from_stored(stored, now_ms).model_dump(), members=members)


class SkuAvailability(BaseModel):
    sku: str
    locations: list[Availability]
    total: Quantities = Field(description="Network view: each quantity summed over the locations "
                                          "(with ?group=: the group's sums, as computed by the dataflow)")
    group: GroupAvailability | None = Field(
        None, description="With ?group=: the group's position, with the member versions it sums")


class QueryItem(BaseModel):
    sku: Id
    location: Id


class QueryRequest(BaseModel):
    items: list[QueryItem] = Field(min_length=1, max_length=MAX_QUERY_ITEMS)


class QueryResult(BaseModel):
    sku: str
    location: str
    found: bool
    availability: Availability | None = None


class QueryResponse(BaseModel):
    results: list[QueryResult]


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


class StockChange(BaseModel):
    event_id: str
    event_type: str
    effective_at: datetime = Field(description="When it took effect (event time; the window's edge if it came late)")
    change: Literal["delta", "set_available", "set_on_hand"] = Field(
        description="delta; set_available (a COUNT); set_on_hand (a snapshot taken as the truth)")
    available: int = Field(description="The change of AVAILABLE, or the absolute figure set")
    non_sellable: int = Field(description="The change of the non-sellable statuses")


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
    def from_stored(cls, a: dict[str, Any]) -> "DriftAlert":
        moved = [StockChange(**{**m, "effective_at": _utc(m["effective_at"])}) for m in a["moved_by"]]
        return cls(**{**a, "as_of": _utc(a["as_of"]), "detected_at": _utc(a["detected_at"]), "moved_by": moved})


class AlertList(BaseModel):
    alerts: list[DriftAlert]


class KeyAlerts(BaseModel):
    sku: str
    location: str
    alerts: list[DriftAlert]
