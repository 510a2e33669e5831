"""Safety stock: a per-location default and per sku@location overrides, from a TOML file, and
overridden by the controls on ``atp.controls.v1`` (see ``effective``).

    [locations]
    DC-01 = 5

    [items]
    "SKU-1@DC-01" = 10
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import ConfigError
from state.events import ID_RE, SafetyStockSet
from state.fold import KeyState
from state.limits import MAX_QTY


@dataclass(frozen=True)
class SafetyStock:
    locations: dict[str, int] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)

    def for_key(self, sku: str, location: str) -> int:
        """The file's value for a key (no controls)."""
        return self.effective(sku, location, None, None)

    def for_state(self, state: KeyState) -> int:
        """A key's safety stock, with the controls it has received."""
        return self.effective(state.sku, state.location, state.safety_item, state.safety_location)

    def effective(self, sku: str, location: str, item: SafetyStockSet | None,
                  location_wide: SafetyStockSet | None) -> int:
        """The safety stock of a key: the most specific setting wins, and a control beats the file
        at the same level. Item control, file item, location control, file location, 0. A
        control whose value is null is cleared: the next level applies."""
        if item is not None and item.safety_stock is not None:
            return item.safety_stock
        if self.items:
            value = self.items.get(f"{sku}@{location}")
            if value is not None:
                return value
        if location_wide is not None and location_wide.safety_stock is not None:
            return location_wide.safety_stock
        return self.locations.get(location, 0)

    @classmethod
    def from_file(cls, path: Path | None) -> SafetyStock:
        if path is None:
            return cls()
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"safety stock file {path}: {exc}") from exc
        unknown = set(data) - {"locations", "items"}
        if unknown:
            raise ConfigError(f"safety stock file {path}: unknown tables {sorted(unknown)}; use [locations] and [items]")
        locations = _section(path, data.get("locations", {}), key_is_pair=False)
        items = _section(path, data.get("items", {}), key_is_pair=True)
        return cls(locations, items)


def _section(path: Path, table: dict[str, object], key_is_pair: bool) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in table.items():
        parts = key.split("@") if key_is_pair else [key]
        if len(parts) != (2 if key_is_pair else 1) or not all(ID_RE.fullmatch(p) for p in parts):
            want = "SKU@LOCATION" if key_is_pair else "a location id"
            raise ConfigError(f"safety stock file {path}: key {key!r} is not {want}")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_QTY:
            raise ConfigError(f"safety stock file {path}: {key} = {value!r} must be an integer from 0 to {MAX_QTY:.0e}")
        out[key] = value
    return out
