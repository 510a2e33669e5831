"""Avro framing on the wire, told apart by the first bytes of each message.

- Avro single-object encoding (default, no registry): ``C3 01`` + 8-byte CRC-64-AVRO fingerprint
  (little-endian) + body; the writer schema is resolved from the revisions in ``schemas/avro``.
- Confluent framing: ``00`` + 4-byte big-endian schema id + body, resolved through a schema
  registry (``ATP_SCHEMA_REGISTRY_URL``).

Parsed schemas are cached per fingerprint / schema id: re-parsing per message is ~1000x slower.
Bodies go through code compiled from the schema (``schemas.compiled``) when it can be, and through
fastavro otherwise or when the compiled code refuses a value, so errors are always fastavro's.
"""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any, Protocol, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import to_parsing_canonical_form

from schemas.compiled import Reader, Writer, compile_reader, compile_writer
from schemas.errors import DecodeError, SchemaError
from schemas.store import SchemaStore, strip_logical_types

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"


class RegistryClient(Protocol):
    """The part of confluent-kafka's ``SchemaRegistryClient`` that the codec uses."""

    def get_schema(self, schema_id: int) -> Any: ...

    def register_schema(self, subject_name: str, schema: Any) -> int: ...


def registry_client(url: str) -> RegistryClient:
    """confluent-kafka's own client (``mock://`` gives its in-memory mock)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient.new_client({"url": url})


# (record full name, writer schema, reader schema or None when they are the same, compiled reader
# or None: only for a writer schema read as it is written)
_Entry = tuple[str, Any, Any, Reader | None]


def _entry(name: str, writer: Any, reader: Any) -> _Entry:
    return name, writer, reader, compile_reader(writer) if reader is None else None


class Decoder:
    """Decodes either framing into ``(record full name, record dict)``; thread-compatible."""

    def __init__(self, store: SchemaStore, registry: RegistryClient | None = None) -> None:
        self._store = store
        self._registry = registry
        self._by_fp: dict[bytes, _Entry] = {}
        self._by_id: dict[int, _Entry] = {}

    def decode(self, payload: bytes | None) -> tuple[str, dict[str, Any]]:
        if not payload:
            raise DecodeError("empty", "message has no value")
        head = payload[:2]
        if head == SINGLE_OBJECT_MAGIC:
            if len(payload) < 10:
                raise DecodeError("truncated", f"single-object header needs 10 bytes, got {len(payload)}")
            fp = payload[2:10]
            entry = self._by_fp.get(fp) or self._resolve_fingerprint(fp)
            start = 10
        elif payload[:1] == CONFLUENT_MAGIC:
            if len(payload) < 5:
                raise DecodeError("truncated", f"Confluent header needs 5 bytes, got {len(payload)}")
            schema_id = int.from_bytes(payload[1:5], "big")
            entry = self._by_id.get(schema_id) or self._resolve_id(schema_id)
            start = 5
        else:
            raise DecodeError(
                "bad_magic",
                f"unknown framing: first bytes {payload[:2].hex()}; expected c301 (Avro single-object) "
                "or 00 (Confluent)",
            )
        name, writer, reader, compiled = entry
        if compiled is not None:
            try:
                record, end = compiled(payload, start, len(payload))
                if end == len(payload):
                    return name, record
            except Exception:  # noqa: S110 - fastavro below reads it again and names the fault
                pass
        body = payload[start:]
        buf = BytesIO(body)
        try:
            record = schemaless_reader(buf, writer, reader)
        except (EOFError, IndexError) as exc:
            raise DecodeError("truncated", f"{name}: body ends early ({type(exc).__name__}: {exc})") from exc
        except Exception as exc:  # fastavro raises assorted types on corrupt input
            raise DecodeError("corrupt", f"{name}: cannot decode body ({type(exc).__name__}: {exc})") from exc
        if buf.tell() != len(body):
            raise DecodeError("corrupt", f"{name}: {len(body) - buf.tell()} trailing bytes after the record")
        return name, cast("dict[str, Any]", record)  # fastavro types any Avro value; the schema is a record

    def _reader_for(self, name: str, writer_canonical: str) -> Any:
        try:
            latest = self._store.latest(name)
        except SchemaError:
            return None  # a registry schema we keep no copy of: read it as written
        return None if latest.canonical == writer_canonical else latest.parsed_plain

    def _resolve_fingerprint(self, fp: bytes) -> _Entry:
        version = self._store.by_fingerprint(fp)
        if version is None:
            raise DecodeError(
                "unknown_schema",
                f"no schema in schemas/avro has fingerprint {fp.hex()}; add the writer's .avsc revision",
            )
        entry = _entry(version.name, version.parsed_plain, self._reader_for(version.name, version.canonical))
        self._by_fp[fp] = entry
        return entry

    def _resolve_id(self, schema_id: int) -> _Entry:
        if self._registry is None:
            raise DecodeError(
                "unknown_schema",
                f"Confluent-framed message (schema id {schema_id}) but no registry is configured; "
                "set ATP_SCHEMA_REGISTRY_URL",
            )
        try:
            schema_str = self._registry.get_schema(schema_id).schema_str
        except Exception as exc:  # the registry client raises its own error types
            raise DecodeError("unknown_schema", f"schema id {schema_id} not found in the registry: {exc}") from exc
        raw = json.loads(schema_str)
        writer = parse_schema(strip_logical_types(raw))
        name = f"{raw.get('namespace')}.{raw['name']}" if raw.get("namespace") else raw["name"]
        entry = _entry(name, writer, self._reader_for(name, to_parsing_canonical_form(parse_schema(raw))))
        self._by_id[schema_id] = entry
        return entry


class Encoder:
    """Encodes records with the newest revision of their schema, in the configured framing."""

    def __init__(self, store: SchemaStore, registry: RegistryClient | None = None) -> None:
        self._store = store
        self._registry = registry
        # (record name, topic) -> (framing header, schema, compiled writer or None); a registry
        # schema id is registered once per target, here
        self._targets: dict[tuple[str, str | None], tuple[bytes, Any, Writer | None]] = {}

    def encode(self, name: str, record: dict[str, Any], topic: str | None = None) -> bytes:
        target = self._targets.get((name, topic)) or self._target(name, topic)
        header, schema, compiled = target
        if compiled is not None:
            try:
                return compiled(header, record)
            except Exception:  # noqa: S110 - fastavro below writes it (datetimes, "NaN") or names the fault
                pass
        buf = BytesIO()
        buf.write(header)
        schemaless_writer(buf, schema, record)
        return buf.getvalue()

    def _target(self, name: str, topic: str | None) -> tuple[bytes, Any, Writer | None]:
        version = self._store.latest(name)
        if self._registry is None:
            header = SINGLE_OBJECT_MAGIC + version.fingerprint
        else:
            header = CONFLUENT_MAGIC + self._schema_id(version.name, version.raw, topic).to_bytes(4, "big")
        target = (header, version.parsed, compile_writer(version.parsed_plain))
        self._targets[(name, topic)] = target
        return target

    def _schema_id(self, name: str, raw: dict[str, Any], topic: str | None) -> int:
        from confluent_kafka.schema_registry import Schema

        assert self._registry is not None
        return self._registry.register_schema(f"{topic}-value" if topic else name, Schema(json.dumps(raw), "AVRO"))
