"""Drift alerts, expiring reservations and the band feed end to end: real broker, dataflow,
Redis and HTTP."""

from __future__ import annotations

import time

import httpx
import pytest

from dataflows.kafka.producer import EventProducer
from dataflows.kafka.topicread import read_topics
from schemas import Decoder, default_store
from tests.builders import order, snapshot, wms
from tests.conftest import get_json, processed, wait_until

pytestmark = pytest.mark.integration


def test_drift_oversold_expiry_and_bands_reach_kafka_redis_and_http(settings, start):
    # SKU-1's snapshot has no later stock change at its key: it is reconciled once the wms
    # partitions have passed its as_of, the quiet ones by being at their end (docs/idle-partitions.md).
    settings = settings.model_copy(update={"reconcile_timeout_s": 3.0})
    hold_s = 6.0
    expires_at = int((time.time() + hold_s) * 1000)
    erp = snapshot(25, t=1_000, event_id="snap-erp")  # the stream has 40 on hand as of then
    wms_snap = snapshot(12, sku="SKU-2", t=1_000, event_id="snap-wms")  # the stream has 10
    wms_snap[1]["source_system"] = "WMS"
    cart = order("RESERVE", "CART-1", 6, sku="SKU-4", t=10)
    cart[1]["expires_at"] = expires_at
    items = [
        wms("RECEIPT", qty=40, t=0), erp,
        wms("RECEIPT", qty=10, sku="SKU-2", t=0), wms("SHIP", qty=3, sku="SKU-2", order_line_id="X", t=2_000),
        wms_snap,
        wms("RECEIPT", qty=2, sku="SKU-3", t=0), order("RESERVE", "L9", 5, sku="SKU-3", t=1),
        wms("RECEIPT", qty=50, sku="SKU-4", t=0), cart,
    ]
    producer = EventProducer(settings)
    for alias, rec in items:
        producer.send(alias, rec)
    assert producer.flush() == 0
    flow = start("run", s=settings)
    api = start("serve", s=settings)
    base = f"http://{settings.api_host}:{settings.api_port}"
    wait_until(lambda: processed(settings) >= len(items), 60, "every event processed", flow)

    # The cart hold is served, then released at expires_at with no further event on the key.
    held = wait_until(lambda: (b := get_json(f"{base}/v1/availability/SKU-4/DC-01")) and b, 30, "SKU-4", api)
    assert held["reserved"] == 6 or time.time() * 1000 >= expires_at
    released = wait_until(lambda: (b := get_json(f"{base}/v1/availability/SKU-4/DC-01")) and b["reserved"] == 0 and b,
                          hold_s + 20, "the cart hold to expire", flow)
    assert released["atp"] == 50 and time.time() * 1000 >= expires_at

    seen: list = []
    try:
        alerts = wait_until(lambda: (b := get_json(f"{base}/v1/drift?limit=10")) and not seen.append(b["alerts"])
                            and len(b["alerts"]) == 3 and b["alerts"], 20, "three alerts over HTTP", api)
    except AssertionError as e:
        raise AssertionError(f"{e}\nlast seen: {seen[-1:]}") from None
    by_key = {(a["kind"], a["sku"]): a for a in alerts}
    erp_alert = by_key[("DRIFT", "SKU-1")]
    assert (erp_alert["expected"], erp_alert["observed"], erp_alert["difference"]) == (40, 25, -15)
    assert (erp_alert["severity"], erp_alert["action"], erp_alert["corrected"]) == ("critical", "alert", False)
    assert erp_alert["source_system"] == "ERP" and erp_alert["alert_id"] == "drift:snap-erp"
    assert [m["event_type"] for m in erp_alert["moved_by"]] == ["RECEIPT"]
    wms_alert = by_key[("DRIFT", "SKU-2")]
    assert (wms_alert["expected"], wms_alert["observed"], wms_alert["action"], wms_alert["corrected"]) == (
        10, 12, "rebase", True)
    oversold = by_key[("OVERSOLD", "SKU-3")]
    assert (oversold["expected"], oversold["observed"], oversold["difference"]) == (5, 2, -3)

    # Rebase: SKU-2 takes the WMS figure as of the snapshot (12) and keeps the later shipment (-3).
    sku2 = get_json(f"{base}/v1/availability/SKU-2/DC-01")
    assert sku2["available_qty"] == 9
    # ERP only alerts: SKU-1 keeps the stream's figure.
    assert get_json(f"{base}/v1/availability/SKU-1/DC-01")["available_qty"] == 40
    critical = get_json(f"{base}/v1/drift?min_severity=critical&kind=DRIFT")["alerts"]
    assert {a["sku"] for a in critical} == {"SKU-1"}
    assert get_json(f"{base}/v1/drift?location=DC-02")["alerts"] == []
    one = get_json(f"{base}/v1/drift/SKU-3/DC-01")
    assert [a["kind"] for a in one["alerts"]] == ["OVERSOLD"]
    missing = httpx.get(f"{base}/v1/drift/SKU-9/DC-01")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    bad = httpx.get(f"{base}/v1/drift?min_severity=loud")
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"

    # The same alerts on the alert topic, and the band feed: one first band per key, and
    # SKU-3 out of stock.
    decoder = Decoder(default_store())
    on_topic = [decoder.decode(m.value)[1] for m in read_topics(settings.kafka_bootstrap, [settings.topic_drift_alerts])]
    assert {a["alert_id"] for a in on_topic} == {a["alert_id"] for a in alerts}
    bands = [decoder.decode(m.value)[1] for m in read_topics(settings.kafka_bootstrap, [settings.topic_thresholds])]
    assert sorted(b["sku"] for b in bands if b["old_band"] is None) == ["SKU-1", "SKU-2", "SKU-3", "SKU-4"]
    newest = {b["sku"]: b["new_band"] for b in sorted(bands, key=lambda b: b["version"])}
    assert newest == {"SKU-1": "IN_STOCK", "SKU-2": "LOW_STOCK", "SKU-3": "OUT_OF_STOCK", "SKU-4": "IN_STOCK"}
    metrics = httpx.get(f"http://{settings.metrics_host}:{settings.metrics_port}/metrics").text
    assert 'atp_reconciliations_total{outcome="drift",source_system="ERP"} 1.0' in metrics
    assert "atp_reservations_expired_total 1.0" in metrics
