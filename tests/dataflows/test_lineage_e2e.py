"""Lineage end to end on the real broker, dataflow, Redis and API: events with correlation ids, then
GET .../explain lists them newest first with their quantity effects (a rebase, a control and an
expiry among them); the drift alert and a dead letter carry the correlation id."""

from __future__ import annotations

import time

import httpx
import pytest

from dataflows import kafka as hdr
from dataflows.kafka.producer import EventProducer
from dataflows.kafka.topicread import read_topics
from schemas import Decoder, default_store
from tests.builders import control, order, snapshot, wms
from tests.conftest import get_json, wait_until

pytestmark = pytest.mark.integration


def _cid(item, cid, source="wms-east"):
    alias, rec = item
    rec.update(correlation_id=cid, source=source)
    return alias, rec


def test_explain_the_alert_and_a_dead_letter_name_the_correlation_ids(settings, start):
    settings = settings.model_copy(update={"reconcile_timeout_s": 3.0})
    expires_at = int((time.time() + 5) * 1000)
    cart = _cid(order("RESERVE", "CART-1", 6, t=10, event_id="o-cart"), "c-cart", "shop")
    cart[1]["expires_at"] = expires_at
    snap = _cid(snapshot(30, t=1_000, event_id="snap-1"), "c-snap", "wms-count")  # the stream has 40 as of then
    snap[1]["source_system"] = "WMS"  # rebase: the stream takes 30 as of t=1000
    items = [
        _cid(wms("RECEIPT", qty=40, t=0, event_id="r1"), "c-recv"),
        cart,
        _cid(wms("SHIP", qty=5, order_line_id="X", t=2_000, event_id="s1"), "c-ship"),
        snap,
        _cid(control(3, sku="SKU-1", t=3_000, event_id="ctl-1"), "c-ctl", "ops"),
        _cid(wms("RECEIPT", qty=-1, sku="SKU-9", event_id="bad-1"), "c-bad"),  # decodes, then refused
    ]
    producer = EventProducer(settings)
    for alias, rec in items:
        producer.send(alias, rec)
    producer.send_raw(settings.topic_wms, b"SKU-8@DC-01", b"plain text")  # not decodable: no correlation id
    assert producer.flush() == 0
    flow = start("run", s=settings)
    api = start("serve", s=settings)
    base = f"http://{settings.api_host}:{settings.api_port}"

    def explained():
        body = get_json(f"{base}/v1/availability/SKU-1/DC-01/explain")
        kinds = {c["change"] for c in body["changes"]} if body else set()
        return body if {"expiry", "set_on_hand", "control"} <= kinds else None

    body = wait_until(explained, 60, "the explanation with the rebase, the control and the expiry", flow)
    assert [(c["event_id"], c["event_type"], c["change"], c["quantity"], c["source"], c["correlation_id"])
            for c in body["changes"]] == [
        ("CART-1", "EXPIRY", "expiry", 6, None, None),
        ("ctl-1", "SAFETY_STOCK_SET", "control", 3, "ops", "c-ctl"),
        ("s1", "SHIP", "delta", -5, "wms-east", "c-ship"),
        ("snap-1", "SNAPSHOT", "set_on_hand", 30, "wms-count", "c-snap"),
        ("r1", "RECEIPT", "delta", 40, "wms-east", "c-recv"),
    ]
    position = body["position"]
    assert (position["available_qty"], position["reserved"], position["safety_stock"], position["atp"]) == (25, 0, 3, 22)
    plain = get_json(f"{base}/v1/availability/SKU-1/DC-01")
    assert {k: plain[k] for k in ("version", "atp", "on_hand", "updated_at")} == {
        k: position[k] for k in ("version", "atp", "on_hand", "updated_at")}
    missing = httpx.get(f"{base}/v1/availability/SKU-7/DC-01/explain")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"

    decoder = Decoder(default_store())
    alerts = [decoder.decode(m.value)[1] for m in read_topics(settings.kafka_bootstrap, [settings.topic_drift_alerts])]
    drift = [a for a in alerts if a["kind"] == "DRIFT"]
    assert [(a["alert_id"], a["correlation_id"]) for a in drift] == [("drift:snap-1", "c-snap")]

    dead = {m.headers[hdr.ERROR_REASON]: m.headers
            for m in read_topics(settings.kafka_bootstrap, [settings.topic_dead_letter])}
    assert dead["invalid_quantity"][hdr.SOURCE_CORRELATION_ID] == "c-bad"
    assert hdr.SOURCE_CORRELATION_ID not in dead["bad_magic"]
    assert api.p.poll() is None
