"""Wire format: both framings, fingerprints, schema evolution, and every decode failure."""

from __future__ import annotations

import io
import json

import pytest
from fastavro import schemaless_writer

from schemas import DecodeError, Decoder, Encoder, SchemaStore, default_store
from schemas.codec import registry_client
from schemas.store import AVRO_DIR

RESERVE = {"event_id": "e1", "occurred_at": 1_767_225_600_000, "source": "oms", "correlation_id": None,
           "sku": "SKU-1", "location": "DC-01", "event_type": "RESERVE", "order_id": "O1",
           "order_line_id": "L1", "channel": "web", "qty": 3}


def crc64_avro(data: bytes) -> int:
    """The Avro specification's reference CRC-64-AVRO, written out independently of fastavro."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for b in data:
        fp = (fp >> 8) ^ table[(fp ^ b) & 0xFF]
    return fp


def test_every_schema_file_loads_and_fingerprints_match_the_spec_algorithm():
    store = default_store()
    assert {n.rsplit(".", 1)[1] for n in store.names()} == {
        "WarehouseEvent", "OrderLineEvent", "InventorySnapshot", "AvailabilityChanged", "DriftAlert",
        "AvailabilityThreshold", "SafetyStockSet"}
    for name in store.names():
        for v in store.revisions(name):
            assert v.fingerprint == crc64_avro(v.canonical.encode()).to_bytes(8, "little")
            assert v.name.startswith("com.atpstream.v1.")


def test_single_object_round_trip_keeps_timestamps_as_millis():
    payload = Encoder(default_store()).encode("OrderLineEvent", RESERVE)
    assert payload[:2] == b"\xc3\x01"
    name, rec = Decoder(default_store()).decode(payload)
    assert name == "com.atpstream.v1.OrderLineEvent"
    assert rec == {**RESERVE, "expires_at": None}


def test_newest_reader_reads_every_older_revision():
    store = default_store()
    decoder = Decoder(store)
    revisions = store.revisions("OrderLineEvent")
    assert len(revisions) >= 2
    for old in revisions[:-1]:
        buf = io.BytesIO()
        buf.write(b"\xc3\x01" + old.fingerprint)
        schemaless_writer(buf, old.parsed, RESERVE)
        _, rec = decoder.decode(buf.getvalue())
        assert rec["qty"] == 3 and rec["expires_at"] is None  # the optional field added later


def test_confluent_framing_through_the_registry_mock():
    registry = registry_client("mock://atp-tests")
    payload = Encoder(default_store(), registry).encode("OrderLineEvent", RESERVE, topic="oms.order-lines.v1")
    assert payload[0] == 0
    schema_id = int.from_bytes(payload[1:5], "big")
    assert json.loads(registry.get_schema(schema_id).schema_str)["name"] == "OrderLineEvent"
    assert Decoder(default_store(), registry).decode(payload)[1]["order_line_id"] == "L1"
    with pytest.raises(DecodeError) as info:
        Decoder(default_store()).decode(payload)  # no registry configured
    assert info.value.reason == "unknown_schema" and "ATP_SCHEMA_REGISTRY_URL" in str(info.value)


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda p: b"\x07" + p[1:], "bad_magic"),
        (lambda p: p[:2] + b"\x00" * 8 + p[10:], "unknown_schema"),
        (lambda p: p[:-4], "truncated"),
        (lambda p: p[:6], "truncated"),
        (lambda p: p + b"\x00\x01", "corrupt"),
        (lambda p: b"", "empty"),
    ],
)
def test_decode_failures_name_their_reason(mangle, reason):
    payload = Encoder(default_store()).encode("OrderLineEvent", RESERVE)
    with pytest.raises(DecodeError) as info:
        Decoder(default_store()).decode(mangle(payload))
    assert info.value.reason == reason


def test_parsed_schemas_are_cached_per_fingerprint(monkeypatch):
    store = default_store()
    decoder = Decoder(store)
    payload = Encoder(store).encode("OrderLineEvent", RESERVE)
    decoder.decode(payload)
    monkeypatch.setattr(store, "by_fingerprint", lambda fp: pytest.fail("looked up again"))
    for _ in range(3):
        decoder.decode(payload)


def test_a_store_refuses_a_misnamed_schema_file(tmp_path):
    (tmp_path / "Wrong.1.avsc").write_text((AVRO_DIR / "WarehouseEvent.1.avsc").read_text())
    with pytest.raises(Exception, match="does not match the file name"):
        SchemaStore.from_dir(tmp_path)
