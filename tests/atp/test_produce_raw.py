"""`atp produce --raw`: bytes go to the topic exactly as given; the real dataflow dead-letters the bad
ones with their reason and applies a valid Avro record (real broker, real Redis)."""

from __future__ import annotations

import base64
import json

import pytest

from dataflows.kafka.topicread import read_topics
from projection.codec import from_hash
from projection.keys import KeySpace
from schemas import Encoder, default_store
from tests.builders import wms
from tests.conftest import processed, run_atp, wait_until

pytestmark = pytest.mark.integration


def test_raw_lines_are_sent_byte_for_byte_bad_ones_dead_lettered_a_valid_one_applied(settings, start, rclient,
                                                                                       tmp_path):
    _, rec = wms("RECEIPT", qty=7, sku="SKU-RAW", event_id="raw-ok")
    avro = Encoder(default_store()).encode("WarehouseEvent", rec, settings.topic_wms)
    lines = [
        json.dumps({"topic": "orders", "key": "SKU-RAW@DC-01", "value_hex": "00ff00", "headers": {"trace": "t-1"}}),
        json.dumps({"topic": settings.topic_wms, "key": None, "value_b64": base64.b64encode(b"plain text").decode()}),
        "not json",
        json.dumps({"topic": "wms", "key": "SKU-RAW@DC-01", "value_hex": "zz"}),
        json.dumps({"topic": "no-such-topic", "key": None, "value_hex": "00"}),
        json.dumps({"topic": "wms", "key": "SKU-RAW@DC-01", "value_b64": base64.b64encode(avro).decode()}),
    ]
    path = tmp_path / "raw.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = run_atp(settings, "produce", "--raw", str(path))
    assert out.returncode == 1, out.stderr
    assert "sent 3, invalid 3, failed 0" in out.stdout
    for number, says in ((3, "not JSON"), (4, "value_hex is not hexadecimal"), (5, "no topic 'no-such-topic'")):
        assert f"{path}:{number}: {says}" in out.stderr
    assert "Traceback" not in out.stderr

    flow = start("run")
    wait_until(lambda: processed(settings) >= 3, 60, "the three records", flow)
    dead = wait_until(lambda: (d := list(read_topics(settings.kafka_bootstrap, [settings.topic_dead_letter])))
                      and len(d) >= 2 and d, 30, "two dead letters", flow)
    by_reason = {m.headers["atp.error.reason"]: m for m in dead}
    assert set(by_reason) == {"truncated", "bad_magic"}
    short = by_reason["truncated"]
    assert (short.value, short.key) == (bytes.fromhex("00ff00"), b"SKU-RAW@DC-01")  # byte for byte
    assert short.headers["trace"] == "t-1" and short.headers["atp.source.topic"] == settings.topic_orders
    assert (by_reason["bad_magic"].value, by_reason["bad_magic"].key) == (b"plain text", None)

    pos = KeySpace(settings.redis_key_prefix).position("SKU-RAW", "DC-01")
    stored = wait_until(lambda: from_hash(rclient.hgetall(pos)), 30, "the valid record's position", flow)
    assert stored["on_hand"] == 7
    listed = run_atp(settings, "dlq", "list")
    assert listed.returncode == 0 and "truncated" in listed.stdout and "bad_magic" in listed.stdout
