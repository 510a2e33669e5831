"""The pipeline watermark: the rule, and honest freshness through the real stack."""

from __future__ import annotations

import time

import pytest

from dataflows.kafka.producer import EventProducer
from dataflows.kafka.topicread import read_topics
from dataflows.runtime.watermark import watermark
from projection.client import connect
from projection.keys import keyspace_of
from schemas import Decoder, default_store
from tests.builders import wms
from tests.conftest import get_json, send_events, wait_until

NOW = 1_767_225_600_000


def test_the_rule():
    times = {("wms", 0, 5): NOW - 9_000, ("orders", 1, 0): NOW - 4_000}

    def log_time(topic, partition, offset):
        return times.get((topic, partition, offset))

    # Every partition at its end: read up to now.
    assert watermark({"0-wms": 7, "1-orders": 3}, {"0-wms": 7, "1-orders": 3}, log_time, NOW) == NOW
    # One behind: the log time of its oldest record not committed; the oldest of several wins.
    assert watermark({"0-wms": 5, "1-orders": 3}, {"0-wms": 7, "1-orders": 3}, log_time, NOW) == NOW - 9_000
    assert watermark({"0-wms": 5}, {"0-wms": 7, "1-orders": 3}, log_time, NOW) == NOW - 9_000  # orders from 0
    assert watermark({"0-wms": 7}, {"0-wms": 7, "1-orders": 3}, log_time, NOW) == NOW - 4_000
    # A time it cannot read: no watermark rather than a wrong one.
    assert watermark({"0-wms": 6}, {"0-wms": 7}, log_time, NOW) is None
    # An empty partition is at its end, whether never read (Bytewax keeps OFFSET_BEGINNING, -2) or not.
    assert watermark({}, {"0-wms": 0}, log_time, NOW) == NOW
    assert watermark({"0-wms": -2, "1-orders": 3}, {"0-wms": 0, "1-orders": 3}, log_time, NOW) == NOW
    assert watermark({"0-orders": -2}, {"0-orders": 1}, lambda t, p, o: NOW - 1 if o == 0 else None, NOW) == NOW - 1
    # Retention deleted a never-read partition's records: it is at its end, not stuck (a second reader
    # found the watermark stopping for good there); one truncated part way reads from its low offset.
    assert watermark({"0-wms": -2}, {"0-wms": 9}, log_time, NOW, lows={"0-wms": 9}) == NOW
    assert watermark({"0-wms": 2}, {"0-wms": 9}, log_time, NOW, lows={"0-wms": 5}) == NOW - 9_000


@pytest.mark.integration
def test_a_quiet_key_is_not_stale_when_the_pipeline_is_current(settings, start):
    """A key whose newest event happened two hours ago answers a lag of seconds, not two hours: the lag
    is the pipeline's (now - watermark); the key's own newest event time stays in as_of."""
    flow = start("run")
    start("serve")
    two_hours_ago = int(time.time() * 1000) - 2 * 3_600_000
    send_events(EventProducer(settings), [wms("RECEIPT", sku="SKU-Q", qty=5, t=0, occurred_at=two_hours_ago)])
    base = f"http://{settings.api_host}:{settings.api_port}"
    body = wait_until(lambda: (b := get_json(f"{base}/v1/availability/SKU-Q/DC-01")) and b["watermark"] and b,
                      60, "an answer with a watermark", flow)
    assert body["as_of"].startswith(time.strftime("%Y-%m-%dT", time.gmtime(two_hours_ago / 1000)))
    assert body["lag_ms"] < 120_000, body  # the pipeline is current; the key is merely quiet
    meta = connect(settings).hget(keyspace_of(settings).meta, "watermark")
    assert meta is not None and int(meta) <= int(time.time() * 1000)
    batch = get_json(f"{base}/v1/availability/SKU-Q")
    assert batch["locations"][0]["watermark"] is not None
    # The availability feed carries the same watermark: a change made once it is known is stamped.
    send_events(EventProducer(settings), [wms("RECEIPT", sku="SKU-Q", qty=2, t=1, occurred_at=two_hours_ago + 1)])
    wait_until(lambda: (get_json(f"{base}/v1/availability/SKU-Q/DC-01") or {}).get("on_hand") == 7, 60,
               "the second receipt", flow)
    decoder = Decoder(default_store(), None)

    def newest() -> dict | None:  # the feed is its own sink: it may land after Redis
        feed = [decoder.decode(m.value)[1] for m in read_topics(settings.kafka_bootstrap, [settings.topic_availability])]
        mine = [r for r in feed if r["sku"] == "SKU-Q"]
        return mine[-1] if mine and mine[-1]["on_hand"] == 7 else None

    last = wait_until(newest, 30, "the second receipt in the availability feed", flow)
    assert last["watermark"] is not None, last
    assert int(meta) <= last["watermark"] <= int(time.time() * 1000), last
