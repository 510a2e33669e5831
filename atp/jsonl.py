"""Canonical JSON events (``atp produce``): one ``{"topic": ..., "event": {...}}`` per line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TextIO

from atp.producer import RECORD_OF_ALIAS
from schemas import default_store
from state import events as ev
from state.errors import InvalidEvent

VALIDATORS = {"wms": ev.warehouse_event, "orders": ev.order_line_event, "snapshots": ev.inventory_snapshot}
TIME_FIELDS = ("occurred_at", "as_of", "expires_at")


@dataclass(frozen=True)
class Line:
    number: int
    alias: str | None = None
    record: dict[str, Any] | None = None
    error: str | None = None


def to_millis(value: Any, field: str) -> int:
    """ISO-8601 (with a zone, or UTC if none) or epoch milliseconds."""
    if isinstance(value, bool):
        raise InvalidEvent("invalid_field", f"{field} must be ISO-8601 or epoch ms")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidEvent("invalid_field", f"{field}={value!r} is not ISO-8601") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return int(dt.timestamp() * 1000)
    raise InvalidEvent("invalid_field", f"{field} must be ISO-8601 or epoch ms, got {value!r}")


def normalise(alias: str, event: dict[str, Any]) -> dict[str, Any]:
    """A canonical JSON event as the Avro record of its topic; raises InvalidEvent."""
    schema = default_store().latest(RECORD_OF_ALIAS[alias])
    fields = [f["name"] for f in schema.raw["fields"]]
    unknown = sorted(set(event) - set(fields))
    if unknown:
        raise InvalidEvent("invalid_field", f"unknown field(s) {', '.join(unknown)} for {alias} events")
    record = {name: event.get(name) for name in fields}
    for name in TIME_FIELDS:
        if record.get(name) is not None and name in record:
            record[name] = to_millis(record[name], name)
    VALIDATORS[alias](record)
    return record


def parse_lines(stream: TextIO) -> Iterator[Line]:
    for number, text in enumerate(stream, start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
            if not isinstance(obj, dict) or set(obj) != {"topic", "event"}:
                raise InvalidEvent("invalid_field", 'each line must be {"topic": ..., "event": {...}}')
            alias, event = obj["topic"], obj["event"]
            if alias not in RECORD_OF_ALIAS:
                raise InvalidEvent("invalid_field", f"topic {alias!r} must be one of wms, orders, snapshots")
            if not isinstance(event, dict):
                raise InvalidEvent("invalid_field", "event must be a JSON object")
            yield Line(number, alias, normalise(alias, event))
        except json.JSONDecodeError as exc:
            yield Line(number, error=f"not JSON: {exc.msg} (column {exc.colno})")
        except InvalidEvent as exc:
            yield Line(number, error=str(exc))
