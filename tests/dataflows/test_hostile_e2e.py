"""Hostile records against the real stack (broker, Redis, `atp run`, `atp serve`): the dataflow stays
up, the ordinary records after them are served, and no read of any key answers 5xx."""

from __future__ import annotations

import httpx
import pytest

from dataflows.kafka.producer import EventProducer
from dataflows.runtime.deadletters import read_dead_letters
from state import limits
from tests.builders import control, snapshot, wms
from tests.conftest import get_json, processed, wait_until

pytestmark = pytest.mark.integration

DAY = 86_400_000


def test_hostile_records_neither_stop_the_flow_nor_break_a_read(settings, start):
    year_10000 = wms("RECEIPT", sku="SKU-Y", qty=1)
    year_10000[1]["occurred_at"] = 253_402_300_800_000
    local_time = snapshot(0, sku="SKU-1")
    local_time[1]["as_of"] += DAY  # a WMS sending local time as UTC
    hostile = [
        *[wms("RECEIPT", sku="SKU-H", qty=limits.MAX_QTY) for _ in range(10)],  # SKU-H at the range's top
        wms("RECEIPT", sku="SKU-H", qty=1),  # one more unit: the sum leaves the range (the flow died here)
        wms("RECEIPT", sku="SKU-Z", qty=2**63 - 1),  # the top of the Avro long...
        wms("RECEIPT", sku="SKU-Z", qty=1),  # ...and one more unit: the flow died here, on every restart
        year_10000,
        local_time,
        wms("RECEIPT", sku="SKU-1", qty=3, event_id="shared"),
        control(2, sku="SKU-1", event_id="shared"),  # another record type with the same id: both count
    ]
    ordinary = [wms("RECEIPT", sku="SKU-1", qty=40, t=1_000), wms("SHIP", sku="SKU-1", qty=5, order_line_id="L1", t=2_000),
                wms("RECEIPT", sku="SKU-2", qty=7, t=1_000)]
    producer = EventProducer(settings)
    for alias, rec in hostile + ordinary:
        producer.send(alias, rec)
    # Not Avro, and near the size limit: its dead letter (the bytes plus headers) was over the
    # producer's limit, produce() raised, and the flow stopped on it after every restart.
    producer.send_raw(settings.topic_wms, b"SKU-1@DC-01", b"X" * 999_700)
    assert producer.flush() == 0
    flow = start("run", s=settings)
    api = start("serve", s=settings)
    base = f"http://{settings.api_host}:{settings.api_port}"
    wait_until(lambda: processed(settings) >= len(hostile) + len(ordinary) + 1, 60, "every record processed", flow)

    sku1 = wait_until(lambda: (b := get_json(f"{base}/v1/availability/SKU-1/DC-01")) and b["version"] >= 4 and b,
                      30, "SKU-1 served", api)
    assert (sku1["available_qty"], sku1["safety_stock"], sku1["atp"], sku1["as_of"]) == (38, 2, 36, "2026-01-01T00:00:02Z")
    assert get_json(f"{base}/v1/availability/SKU-2/DC-01")["available_qty"] == 7
    assert get_json(f"{base}/v1/availability/SKU-H/DC-01")["available_qty"] == limits.MAX_FIGURE
    assert flow.p.poll() is None, "the dataflow stopped"

    reads = [f"/v1/availability/{sku}/DC-01" for sku in ("SKU-1", "SKU-2", "SKU-H", "SKU-Y", "SKU-Z")]
    reads += [f"/v1/availability/{sku}" for sku in ("SKU-1", "SKU-H", "SKU-Y")]
    reads += ["/v1/drift", "/v1/drift/SKU-1/DC-01", "/v1/drift/SKU-H/DC-01", "/readyz", "/healthz"]
    for path in reads:
        r = httpx.get(base + path, timeout=5)
        assert r.status_code < 500 and r.headers["content-type"].startswith("application/json"), (path, r.text)
    batch = httpx.post(f"{base}/v1/availability/query", timeout=5, json={"items": [
        {"sku": s, "location": "DC-01"} for s in ("SKU-1", "SKU-H", "SKU-Y", "SKU-Z")]})
    assert batch.status_code == 200 and [x["found"] for x in batch.json()["results"]] == [True, True, False, True]
    assert get_json(f"{base}/v1/availability/SKU-Z/DC-01")["available_qty"] == 1

    dead = wait_until(lambda: len(d := read_dead_letters(settings)) >= 5 and d, 20, "the dead letters")
    by_reason = sorted((e.reason, e.headers.get("atp.error.step")) for e in dead.values())
    assert by_reason == [("bad_magic", "decode"), ("clock_skew", "decode"), ("clock_skew", "decode"),
                         ("out_of_range", "atp_fold"), ("out_of_range", "decode")]
    [big] = [e for e in dead.values() if e.reason == "bad_magic"]
    assert big.value is None and big.headers["atp.error.dropped"] == "value" and big.headers["atp.source.bytes"]
