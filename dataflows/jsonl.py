"""Canonical JSON events (``atp produce``): one ``{"topic": ..., "event": {...}}`` per line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, TextIO

from dataflows.kafka.producer import RECORD_OF_ALIAS
from schemas import default_store
from state import events as ev
from state.errors import InvalidEvent

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
            dt = dt.replace(tzinfo=UTC)
        return int(dt.timestamp() * 1000)
    raise InvalidEvent("invalid_field", f"{field} must be ISO-8601 or epoch ms, got {value!r}")


def normalise(alias: str, event: dict[str, Any]) -> dict[str, Any]:
    """A canonical JSON event as the Avro record of its topic; raises InvalidEvent."""
    name = RECORD_OF_ALIAS[alias]
    fields = _field_names(name)
    unknown = sorted(set(event) - set(fields))
    if unknown:
        raise InvalidEvent("invalid_field", f"unknown field(s) {', '.join(unknown)} for {alias} events")
    record = {f: event.get(f) for f in fields}
    for f in TIME_FIELDS:
        if record.get(f) is not None:
            record[f] = to_millis(record[f], f)
    ev.PARSERS[name](record)
    return record


@cache
def _field_names(record: str) -> tuple[str, ...]:
    return tuple(f["name"] for f in default_store().latest(record).raw["fields"])


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
                raise InvalidEvent("invalid_field", f"topic {alias!r} must be one of {', '.join(RECORD_OF_ALIAS)}")
            if not isinstance(event, dict):
                raise InvalidEvent("invalid_field", "event must be a JSON object")
            yield Line(number, alias, normalise(alias, event))
        except json.JSONDecodeError as exc:
            yield Line(number, error=f"not JSON: {exc.msg} (column {exc.colno})")
        except InvalidEvent as exc:
            yield Line(number, error=str(exc))
