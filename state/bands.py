"""Availability bands for channels that must not be sent every change (marketplaces rate-limit
inventory updates): a key's band changes only when its ATP crosses a configured boundary."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

OUT_OF_STOCK, LOW_STOCK, IN_STOCK = "OUT_OF_STOCK", "LOW_STOCK", "IN_STOCK"
BANDS = (OUT_OF_STOCK, LOW_STOCK, IN_STOCK)


def band_of(atp: int, low_stock_atp: int) -> str:
    """``OUT_OF_STOCK`` at 0, ``LOW_STOCK`` up to ``low_stock_atp``, else ``IN_STOCK``."""
    if atp <= 0:
        return OUT_OF_STOCK
    if atp <= low_stock_atp:
        return LOW_STOCK
    return IN_STOCK


@dataclass(slots=True)
class BandChange:
    """A key moved from one band to another (``old_band`` None: its first position)."""

    sku: str
    location: str
    old_band: str | None
    new_band: str
    atp: int
    version: int
    as_of: int
    updated_at: int

    @property
    def key(self) -> str:
        return f"{self.sku}@{self.location}"

    def as_dict(self) -> dict[str, Any]:
        """The ``AvailabilityThreshold`` record."""
        return {name: getattr(self, name) for name in _NAMES}


_NAMES = tuple(f.name for f in fields(BandChange))
