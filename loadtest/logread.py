"""Reading topics back from the broker, and decoding them without the production codec.

The oracle must see the log as Kafka holds it (partition/offset order, duplicates and all), decoded
by code that shares nothing with ``schemas.codec``: fastavro directly, the writer schema found by
its CRC-64-AVRO fingerprint as fastavro computes it.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from fastavro.schema import fingerprint, to_parsing_canonical_form

AVRO_DIR = Path(__file__).resolve().parent.parent / "schemas" / "avro"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]


def read_topics(bootstrap: str, topics: list[str], timeout_s: float = 30.0) -> Iterator[Message]:
    """Every message of ``topics`` from the beginning to the end, partition by partition."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "atp-logread", "enable.auto.commit": False,
                         "enable.partition.eof": True, "fetch.max.bytes": 52428800})
    try:
        md = consumer.list_topics(timeout=timeout_s)
        for topic in topics:
            for p in sorted(md.topics[topic].partitions):
                consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING)])
                deadline = time.monotonic() + timeout_s
                while True:
                    # A short wait: consume() returns early only when the batch is full.
                    msgs = consumer.consume(10_000, 0.2)
                    if not msgs:
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"no end of {topic}[{p}] within {timeout_s} s")
                        continue
                    deadline = time.monotonic() + timeout_s
                    done = False
                    for m in msgs:
                        err = m.error()
                        if err is not None:
                            if err.code() == KafkaError._PARTITION_EOF:
                                done = True
                                break
                            raise RuntimeError(f"reading {topic}[{p}]: {err}")
                        headers = {k: v.decode() for k, v in (m.headers() or []) if v is not None}
                        yield Message(topic, p, m.offset(), m.key(), m.value(), headers)
                    if done:
                        break
    finally:
        consumer.close()


class AvroReader:
    """Single-object encoding (``C3 01`` + 8-byte fingerprint + body), with fastavro alone."""

    def __init__(self, directory: Path = AVRO_DIR) -> None:
        self.schemas: dict[bytes, tuple[str, Any]] = {}
        for path in sorted(directory.glob("*.avsc")):
            parsed = fastavro.parse_schema(json.loads(path.read_text()))
            fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
            self.schemas[fp] = (parsed["name"].rsplit(".", 1)[-1], parsed)

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
        return name, {k: (v - _EPOCH) // _MS if isinstance(v, datetime) else v for k, v in record.items()}
