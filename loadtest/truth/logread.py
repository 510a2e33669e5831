"""Reading topics back from the broker, and decoding them without the production codec.

The oracle must see the log as Kafka holds it (offset order per partition, duplicates and all), decoded
by code that shares nothing with ``schemas.codec``: fastavro directly, the writer schema found by
its CRC-64-AVRO fingerprint as fastavro computes it.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from dataflows.kafka.topicread import Message, read_topics

__all__ = ["AvroReader", "Message", "read_topics"]

AVRO_DIR = Path(__file__).resolve().parents[2] / "schemas" / "avro"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class AvroReader:
    """Single-object encoding (``C3 01`` + 8-byte fingerprint + body), with fastavro alone."""

    def __init__(self, directory: Path = AVRO_DIR) -> None:
        self.schemas: dict[bytes, tuple[str, Any]] = {}
        for path in sorted(directory.glob("*.avsc")):
            raw = json.loads(path.read_text())
            parsed = fastavro.parse_schema(raw)
            fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
            self.schemas[fp] = (raw["name"].rsplit(".", 1)[-1], parsed)

    def read(self, value: bytes | None) -> tuple[str, dict[str, Any]]:
        """(record name, canonical record); raises ValueError for anything undecodable."""
        if not value or len(value) < 10 or value[:2] != b"\xc3\x01":
            raise ValueError("not single-object encoded")
        found = self.schemas.get(value[2:10])
        if found is None:
            raise ValueError("unknown fingerprint")
        name, schema = found
        buf = io.BytesIO(value[10:])
        try:
            record = fastavro.schemaless_reader(buf, schema)
        except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError... on bad bytes
            raise ValueError(f"bad body: {exc}") from None
        if buf.tell() != len(value) - 10:
            raise ValueError("trailing bytes")
        if not isinstance(record, dict):  # every schema here is a record's
            raise ValueError("not a record")
        return name, {k: (v - _EPOCH) // _MS if isinstance(v, datetime) else v for k, v in record.items()}
