"""A key's published position, derived from its state and its safety stock."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from state.fold import AVAILABLE, KeyState, demand_rates

FIELDS = (
    "atp", "available_qty", "on_hand", "reserved", "non_sellable",
    "inbound", "safety_stock", "shortfall",
)


@dataclass(frozen=True, slots=True)
class Position:
    """What channels read for one sku@location; ``as_of`` and ``updated_at`` are epoch millis (UTC)."""

    sku: str
    location: str
    atp: int
    available_qty: int
    on_hand: int
    reserved: int
    non_sellable: int
    inbound: int
    safety_stock: int
    shortfall: int
    version: int
    as_of: int
    updated_at: int
    formula_version: int = 1
    demand_per_min_5m: float = 0.0  # units reserved per minute, last 5 / 60 one-minute windows
    demand_per_min_60m: float = 0.0
    stockout_eta_minutes: float | None = None  # atp / demand_per_min_5m; None without recent demand

    @property
    def key(self) -> str:
        return f"{self.sku}@{self.location}"

    @property
    def oversold(self) -> bool:
        """A bucket driven below zero, e.g. a SHIP with no recorded stock."""
        return self.available_qty < 0

    def as_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies recursively (11 us vs 0.8 us here) and this runs
        # once per published position.
        return {name: getattr(self, name) for name in _NAMES}


_NAMES = tuple(f.name for f in fields(Position))


def _atp_v1(available: int, inbound: int, reserved: int, safety_stock: int) -> int:
    """Promise only what is physically available: AVAILABLE - reserved - safety stock."""
    return max(0, available - reserved - safety_stock)


def _atp_v2(available: int, inbound: int, reserved: int, safety_stock: int) -> int:
    """Also promise stock in transit to the location (inbound transfers)."""
    return max(0, available + inbound - reserved - safety_stock)


# The ATP formula is versioned: positions carry the version that computed them, and a replay
# into a new generation can use a newer one. Never change a published version's meaning.
FORMULAS = {1: _atp_v1, 2: _atp_v2}
LATEST_FORMULA = max(FORMULAS)


def position(state: KeyState, safety_stock: int, updated_at_ms: int, formula: int = 1) -> Position:
    b = state.buckets
    available = b[AVAILABLE]
    reserved = state.reserved
    atp = FORMULAS[formula](available, state.inbound, reserved, safety_stock)
    d5, d60 = demand_rates(state) if state.demand else (0.0, 0.0)
    return Position(
        sku=state.sku,
        location=state.location,
        atp=atp,
        available_qty=available,
        on_hand=b[0] + b[1] + b[2] + b[3],
        reserved=reserved,
        non_sellable=b[1] + b[2] + b[3],
        inbound=state.inbound,
        safety_stock=safety_stock,
        shortfall=max(0, reserved + safety_stock - available),
        version=state.version,
        as_of=state.max_event_ms,
        updated_at=updated_at_ms,
        formula_version=formula,
        **make_rates(atp, d5, d60),
    )


def make_rates(atp: int, d5: float, d60: float) -> dict[str, float | None]:
    """The demand fields of a position: rounded rates and the stock-out estimate."""
    return {
        "demand_per_min_5m": round(d5, 3),
        "demand_per_min_60m": round(d60, 3),
        "stockout_eta_minutes": round(atp / d5, 1) if d5 > 0 else None,
    }


def network_total(positions: list[dict[str, Any]]) -> dict[str, int]:
    """The network view of a SKU: each quantity summed over its locations."""
    return {f: sum(int(p[f]) for p in positions) for f in FIELDS}
