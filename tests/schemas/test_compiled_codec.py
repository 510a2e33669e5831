"""The compiled Avro readers and writers against fastavro, on random, mistyped and corrupted records
of every schema revision we keep: when compiled code succeeds it must say exactly what fastavro
says; when it refuses, the codec's answer (value or error) must be fastavro's."""

from __future__ import annotations

import io
import math
import random
import struct
from datetime import UTC, datetime
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from schemas import DecodeError, Decoder, Encoder, default_store
from schemas.codec import SINGLE_OBJECT_MAGIC
from schemas.compiled import compile_reader, compile_writer, read_long, write_long

STORE = default_store()
VERSIONS = [v for name in STORE.names() for v in STORE.revisions(name)]
HOT = ("WarehouseEvent", "OrderLineEvent", "InventorySnapshot", "SafetyStockSet", "AvailabilityChanged")
HEADER = b"\xc3\x01HEADER!!"


def _named(t: Any, found: dict[str, Any]) -> dict[str, Any]:
    """Every named type defined anywhere in a schema, by full name."""
    if isinstance(t, list):
        for branch in t:
            _named(branch, found)
    elif isinstance(t, dict):
        if t["type"] in ("record", "enum", "fixed"):
            found[t["name"]] = t
        for f in t.get("fields", []):
            _named(f["type"], found)
        if "items" in t:
            _named(t["items"], found)
    return found


def _random(t: Any, rng: random.Random, named: dict[str, Any] | None = None) -> Any:
    named = _named(t, {}) if named is None else named
    if isinstance(t, str) and t in named:
        t = named[t]
    kind = t["type"] if isinstance(t, dict) else t
    if isinstance(t, list):
        return _random(rng.choice(t), rng, named)
    if kind == "null":
        return None
    if kind == "boolean":
        return rng.random() < 0.5
    if kind in ("int", "long"):
        bits = 31 if kind == "int" else 63
        return rng.choice([0, 1, -1, 63, 64, -64, -65, 127, 128, 1_767_225_600_000,
                           (1 << bits) - 1, -(1 << bits), rng.randint(-(1 << bits), (1 << bits) - 1)])
    if kind in ("float", "double"):
        return rng.choice([0.0, -0.0, 1.5, -2.25, 1e300, math.inf, rng.uniform(-1e6, 1e6)])
    if kind == "string":
        return rng.choice(["", "SKU-1", "ü€𝄞", "x" * 200, "".join(rng.choice("ab-._") for _ in range(rng.randint(0, 70)))])
    if kind == "enum":
        return rng.choice(t["symbols"])
    if kind == "array":
        return [_random(t["items"], rng, named) for _ in range(rng.randint(0, 3))]
    assert kind == "record", t
    return {f["name"]: _random(f["type"], rng, named) for f in t["fields"]}


def _fastavro_bytes(schema: Any, record: Any) -> bytes:
    buf = io.BytesIO()
    buf.write(HEADER)
    schemaless_writer(buf, schema, record)
    return buf.getvalue()


def _fastavro_read(schema: Any, body: bytes) -> tuple[Any, int]:
    buf = io.BytesIO(body)
    return schemaless_reader(buf, schema, None), buf.tell()


def _same(a: Any, b: Any) -> bool:
    """Equality that holds for NaN and tells -0.0 from 0.0: floats compare by their bits."""
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same, a, b))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: f"{v.name.rsplit('.', 1)[1]}.{v.revision}")
def test_compiled_code_writes_and_reads_exactly_what_fastavro_does(version):
    schema = version.parsed_plain
    writer, reader = compile_writer(schema), compile_reader(schema)
    if version.name.rsplit(".", 1)[1] in HOT:
        assert writer is not None and reader is not None  # the hot path must not fall back silently
    if writer is None:
        assert reader is None
        return
    rng = random.Random(version.revision * 7919 + len(version.name))
    for _ in range(400):
        record = _random(schema, rng)
        expected = _fastavro_bytes(schema, record)
        assert writer(HEADER, record) == expected
        value, end = reader(expected, len(HEADER), len(expected))
        assert end == len(expected)
        assert _same(value, _fastavro_read(schema, expected[len(HEADER):])[0])


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: f"{v.name.rsplit('.', 1)[1]}.{v.revision}")
def test_a_corrupted_or_truncated_body_is_read_as_fastavro_reads_it_or_refused(version):
    schema = version.parsed_plain
    reader = compile_reader(schema)
    if reader is None:
        return
    rng = random.Random(version.revision)
    agreed = refused = 0
    for _ in range(600):
        body = bytearray(_fastavro_bytes(schema, _random(schema, rng))[len(HEADER):])
        if rng.random() < 0.3:
            del body[rng.randrange(len(body)):]
        for _ in range(rng.randint(1, 3)):
            if body:
                body[rng.randrange(len(body))] = rng.choice([0, 1, 2, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        data = bytes(body)
        try:
            value, end = reader(data, 0, len(data))
        except Exception:
            refused += 1  # the codec then asks fastavro, so its answer is fastavro's by construction
            continue
        expected, used = _fastavro_read(schema, data)
        assert end == used and _same(value, expected), data.hex()
        agreed += 1
    assert agreed > 50 and refused > 50  # both paths were exercised


@pytest.mark.parametrize("name", HOT)
def test_a_mistyped_value_is_written_as_fastavro_writes_it_or_refused_with_fastavros_error(name):
    version = STORE.latest(name)
    schema, writer = version.parsed_plain, compile_writer(version.parsed_plain)
    encoder = Encoder(STORE)
    rng = random.Random(5)
    bad_values = [None, "7", 1.5, 100.0, True, 1 << 70, b"x", ["a"], {"a": 1}, "NaN", "NOT_A_SYMBOL"]
    for field in schema["fields"]:
        for bad in bad_values:
            record = {**_random(schema, rng), field["name"]: bad}
            try:
                expected: bytes | type = _fastavro_bytes(version.parsed, record)[len(HEADER):]
            except Exception as exc:
                expected = type(exc)
            try:
                mine: bytes | None = writer(HEADER, record)[len(HEADER):]
            except Exception:
                mine = None  # refused: the codec's own answer below must then be fastavro's
            if mine is not None:
                assert mine == expected, (field["name"], bad)
            if isinstance(expected, bytes):
                assert encoder.encode(name, record)[10:] == expected
            else:
                with pytest.raises(expected):
                    encoder.encode(name, record)


def test_a_missing_field_takes_its_default_as_fastavro_does():
    version = STORE.latest("AvailabilityChanged")
    record = _random(version.parsed_plain, random.Random(1))
    for field in ("formula_version", "demand_per_min_5m", "stockout_eta_minutes"):
        record.pop(field)
    assert compile_writer(version.parsed_plain)(HEADER, record) == _fastavro_bytes(version.parsed_plain, record)


def test_the_codec_takes_datetimes_for_timestamps_through_fastavro():
    when = datetime(2026, 1, 1, tzinfo=UTC)
    record = {"event_id": "e1", "occurred_at": when, "source": "oms", "correlation_id": None, "sku": "S",
              "location": "L", "event_type": "RELEASE", "order_id": "O", "order_line_id": "L1",
              "channel": "web", "qty": None, "expires_at": None}
    payload = Encoder(STORE).encode("OrderLineEvent", record)
    assert payload[:2] == SINGLE_OBJECT_MAGIC
    assert Decoder(STORE).decode(payload)[1]["occurred_at"] == int(when.timestamp() * 1000)


def test_a_body_the_compiled_reader_refuses_gets_fastavros_error():
    record = {**_random(STORE.latest("SafetyStockSet").parsed_plain, random.Random(2)), "safety_stock": 3}
    payload = Encoder(STORE).encode("SafetyStockSet", record)
    with pytest.raises(DecodeError) as err:
        Decoder(STORE).decode(payload[:-1])
    assert err.value.reason == "truncated"
    with pytest.raises(DecodeError) as err:
        Decoder(STORE).decode(payload + b"\x00")
    assert err.value.reason == "corrupt" and "trailing" in str(err.value)


@pytest.mark.parametrize("schema", [
    {"type": "array", "items": "long"},
    {"type": "map", "values": "string"},
    {"type": "record", "name": "R", "fields": [{"name": "u", "type": ["null", "long", "string"]}]},
    {"type": "record", "name": "Node", "fields": [{"name": "next", "type": ["null", "Node"]}]},
])
def test_shapes_outside_the_compiled_subset_are_left_to_fastavro(schema):
    parsed = parse_schema(schema)
    assert compile_reader(parsed) is None and compile_writer(parsed) is None


@pytest.mark.parametrize("value", [0, 1, -1, 63, -64, 64, -65, 8191, 1 << 40, (1 << 63) - 1, -(1 << 63)])
def test_long_varints_round_trip(value):
    out = bytearray()
    write_long(out, value)
    assert read_long(bytes(out), 0) == (value, len(out))
    assert bytes(out) == _fastavro_bytes("long", value)[len(HEADER):]
    with pytest.raises(OverflowError):
        write_long(bytearray(), (1 << 63) if value >= 0 else -(1 << 63) - 1)
