"""Canonical event records for tests (the same shapes ``atp produce`` accepts)."""

from __future__ import annotations

import itertools
from typing import Any

from dataflows.kafka.producer import RECORD_OF_ALIAS
from state import events as ev

_ids = itertools.count(1)
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _base(sku: str, location: str, t: int, event_id: str | None) -> dict[str, Any]:
    return {"event_id": event_id if event_id is not None else f"e{next(_ids)}", "occurred_at": T0 + t, "source": "test",
            "correlation_id": None, "sku": sku, "location": location}


def wms(event_type: str, sku: str = "SKU-1", location: str = "DC-01", t: int = 0,
        event_id: str | None = None, **fields: Any) -> tuple[str, dict[str, Any]]:
    rec = {**_base(sku, location, t, event_id), "event_type": event_type, "qty": None, "counted_qty": None,
           "from_status": None, "to_status": None, "order_line_id": None, "reason": None,
           "to_location": None, "from_location": None, "transfer_id": None}
    rec.update(fields)
    return "wms", rec


def order(event_type: str, line: str, qty: int | None = None, sku: str = "SKU-1", location: str = "DC-01",
          t: int = 0, event_id: str | None = None) -> tuple[str, dict[str, Any]]:
    rec = {**_base(sku, location, t, event_id), "event_type": event_type, "order_id": "O-" + line,
           "order_line_id": line, "channel": "web", "qty": qty, "expires_at": None}
    return "orders", rec


def snapshot(on_hand: int, sku: str = "SKU-1", location: str = "DC-01", t: int = 0,
             event_id: str | None = None) -> tuple[str, dict[str, Any]]:
    rec = {**_base(sku, location, t, event_id), "snapshot_id": f"S{next(_ids)}", "on_hand": on_hand,
           "as_of": T0 + t, "source_system": "ERP"}
    return "snapshots", rec


def control(value: int | None, location: str = "DC-01", sku: str | None = None, t: int = 0,
            event_id: str | None = None) -> tuple[str, dict[str, Any]]:
    """A SafetyStockSet: for one item, or (``sku`` None) the location's default."""
    rec = {**_base(sku, location, t, event_id), "safety_stock": value, "reason": "test"}  # type: ignore[arg-type]
    return "controls", rec


def parse(item: tuple[str, dict[str, Any]]) -> ev.Event:
    alias, rec = item
    return ev.PARSERS[RECORD_OF_ALIAS[alias]](rec)
