"""Public response and request models (separate from the stored Redis hashes)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

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

    @classmethod
    def from_stored(cls, stored: dict[str, Any], now_ms: int) -> "Availability":
        return cls(
            **{k: stored[k] for k in Quantities.model_fields},
            sku=stored["sku"],
            location=stored["location"],
            version=stored["version"],
            as_of=datetime.fromtimestamp(stored["as_of"] / 1000, timezone.utc),
            updated_at=datetime.fromtimestamp(stored["updated_at"] / 1000, timezone.utc),
            lag_ms=max(0, now_ms - stored["as_of"]),
            formula_version=stored.get("formula_version", 1),
        )


class SkuAvailability(BaseModel):
    sku: str
    locations: list[Availability]
    total: Quantities = Field(description="Network view: each quantity summed over the locations")


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
