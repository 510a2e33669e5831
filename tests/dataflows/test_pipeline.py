"""End to end on the real embedded broker and Redis: produce -> dataflow -> Redis -> HTTP."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from dataflows.kafka.producer import EventProducer
from sandbox.child import ROOT
from tests.builders import order, snapshot, wms
from tests.conftest import env_of, processed, wait_until
from tests.reference import fold_all

pytestmark = pytest.mark.integration


def jsonl(items):
    return "".join(json.dumps({"topic": alias, "event": rec}) + "\n" for alias, rec in items)


def test_produce_run_serve(settings, start, tmp_path):
    items = [
        wms("RECEIPT", qty=40, t=0),
        wms("RECEIPT", qty=5, to_status="QUARANTINE", t=1),
        order("RESERVE", "L1", 6, t=2),
        wms("SHIP", qty=2, order_line_id="L1", t=3),
        wms("TRANSFER_OUT", qty=7, to_location="DC-02", transfer_id="T1", t=4),
        order("RESERVE", "L2", 3, sku="SKU-2", t=5),
        snapshot(44, t=6),
    ]
    items[0][1]["occurred_at"] = "2026-01-01T00:00:00Z"  # ISO-8601 is accepted as well as epoch ms
    text = jsonl(items[:3]) + "this is not json\n" + jsonl([wms("RECEIPT", qty=-1)]) + "\n" + jsonl(items[3:])
    path = tmp_path / "events.jsonl"
    path.write_text(text)
    out = subprocess.run([sys.executable, "-m", "atp", "produce", str(path)], env=env_of(settings), cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    assert f"{path}:4: not JSON" in out.stderr
    assert f"{path}:5: RECEIPT needs qty > 0, got -1" in out.stderr
    assert "sent 7, invalid 2, failed 0" in out.stdout

    flow = start("run")
    api = start("serve")
    wait_until(lambda: processed(settings) >= len(items), 60, "the dataflow to process every event", flow)
    base = f"http://{settings.api_host}:{settings.api_port}"
    wait_until(lambda: _get(f"{base}/readyz") == 200, 30, "the API", api)
    items[0][1]["occurred_at"] = 1_767_225_600_000
    expected = fold_all(items)

    def served(key):
        sku, loc = key.split("@")
        r = httpx.get(f"{base}/v1/availability/{sku}/{loc}")
        return r.json() if r.status_code == 200 else None

    for key, pos in expected.items():
        body = wait_until(lambda: (b := served(key)) and b["version"] == pos.version and b, 10, f"{key} over HTTP")
        for field in ("atp", "available_qty", "on_hand", "reserved", "non_sellable", "inbound", "shortfall"):
            assert body[field] == getattr(pos, field), (key, field)
        assert body["as_of"].startswith("2026-01-01T00:00:00.00")  # lag_ms: tests/dataflows/test_watermark.py
    network = httpx.get(f"{base}/v1/availability/SKU-1").json()
    assert [loc["location"] for loc in network["locations"]] == ["DC-01", "DC-02"]
    assert network["total"]["inbound"] == 7 and network["total"]["on_hand"] == 36
    batch = httpx.post(f"{base}/v1/availability/query", json={"items": [
        {"sku": "SKU-2", "location": "DC-01"}, {"sku": "SKU-9", "location": "DC-01"}]}).json()["results"]
    assert [(r["found"], r["availability"] and r["availability"]["reserved"]) for r in batch] == [(True, 3), (False, None)]
    metrics = httpx.get(f"{base}/metrics").text
    assert 'atp_api_requests_total{route="/v1/availability/{sku}/{location}",status="200"}' in metrics


def test_bad_messages_are_dead_lettered_with_their_origin(settings, start):
    producer = EventProducer(settings)
    producer.send_raw(settings.topic_wms, b"SKU-1@DC-01", b"\x00\x00\x00\x00\x01junk")  # Confluent, no registry
    producer.send_raw(settings.topic_orders, b"SKU-1@DC-01", b"plain text")
    producer.send("wms", wms("RECEIPT", qty=3)[1])
    assert producer.flush() == 0
    flow = start("run")
    wait_until(lambda: processed(settings) >= 3, 60, "three events processed", flow)
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "t", "enable.partition.eof": True})
    consumer.assign([TopicPartition(settings.topic_dead_letter, p, 0) for p in range(settings.topic_partitions)])
    dead, eof = [], 0
    deadline = __import__("time").monotonic() + 20
    while len(dead) < 2 and __import__("time").monotonic() < deadline:
        for m in consumer.consume(100, 0.5):
            if m.error():
                eof += 1
            else:
                dead.append(m)
    consumer.close()
    by_reason = {dict(m.headers())["atp.error.reason"]: m for m in dead}
    assert set(by_reason) == {b"unknown_schema", b"bad_magic"}
    bad = dict(by_reason[b"bad_magic"].headers())
    assert by_reason[b"bad_magic"].value() == b"plain text"
    assert bad["atp.source.topic"] == settings.topic_orders.encode() and bad["atp.source.offset"] == b"0"
    text = httpx.get(f"http://{settings.metrics_host}:{settings.metrics_port}/metrics").text
    assert 'atp_dead_letter_total{reason="bad_magic"} 1.0' in text
    assert f'atp_events_total{{event_type="RECEIPT",outcome="applied",topic="{settings.topic_wms}"}} 1.0' in text


def test_the_dataflow_refuses_to_start_without_its_topics(settings, stack_settings):
    missing = settings.model_copy(update={"topic_wms": "no-such-topic"})
    out = subprocess.run([sys.executable, "-m", "atp", "run"], env=env_of(missing), cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "no-such-topic" in out.stderr and "atp topics create" in out.stderr


def test_the_dataflow_fails_fast_when_the_broker_is_unreachable(settings):
    from sandbox.stack import free_port

    gone = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    out = subprocess.run([sys.executable, "-m", "atp", "run"], env=env_of(gone), cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "cannot reach Kafka" in out.stderr


def _get(url):
    try:
        return httpx.get(url, timeout=1).status_code
    except httpx.HTTPError:
        return None


def test_sigterm_stops_the_dataflow_cleanly(settings, start):
    import signal

    producer = EventProducer(settings)
    producer.send("wms", wms("RECEIPT", qty=3)[1])
    assert producer.flush() == 0
    flow = start("run")
    wait_until(lambda: processed(settings) >= 1, 60, "one event processed", flow)
    code = flow.stop(signal.SIGTERM)
    assert code == 0, f"exit {code}:\n{flow.tail()}"
    assert "dataflow stopped by SIGTERM" in flow.tail() and "Traceback" not in flow.tail()
