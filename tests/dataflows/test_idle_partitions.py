"""Idle wms partitions do not hold reconciliation back (docs/idle-partitions.md): real broker,
dataflow and Redis."""

from __future__ import annotations

import json
import time

import pytest
from confluent_kafka import Producer

from dataflows.kafka import source as kafka_source
from dataflows.kafka.producer import EventProducer
from dataflows.kafka.topicread import read_topics
from projection.keys import keyspace_of
from schemas import Decoder, default_store
from tests.builders import T0, snapshot, wms
from tests.conftest import processed, wait_until

pytestmark = pytest.mark.integration


def test_a_snapshot_on_a_quiet_stream_reconciles_after_the_delay_not_at_the_timeout(settings, rclient, start):
    settings = settings.model_copy(update={"reconcile_delay_s": 2.0, "reconcile_timeout_s": 60.0})
    assert settings.topic_partitions >= 3  # one wms partition gets the events, the others stay empty
    now = int(time.time() * 1000) - T0
    producer = EventProducer(settings)
    producer.send(*wms("RECEIPT", qty=40, t=now - 30_000))  # the stream has 40 on hand from then on
    assert producer.flush() == 0
    flow = start("run", s=settings)
    wait_until(lambda: processed(settings) >= 1, 60, "the receipt processed", flow)

    # An ERP count of a second ago: its past is in (every wms partition is at the end of its log),
    # but no wms partition will ever pass its as_of.
    producer.send(*snapshot(25, t=now - 1_000, event_id="snap-quiet"))
    assert producer.flush() == 0
    sent = time.monotonic()
    key = keyspace_of(settings).alert("SKU-1", "DC-01")
    raw = wait_until(lambda: rclient.hget(key, "DRIFT"), 20, "the drift alert in Redis", flow, interval=0.05)
    took = time.monotonic() - sent
    print(f"drift alert {took:.2f} s after the snapshot was written")
    assert took < settings.reconcile_delay_s + 4.0  # the delay, a check interval's slack, the sink: not 60 s

    alert = json.loads(raw)
    assert (alert["expected"], alert["observed"], alert["difference"]) == (40, 25, -15)
    wms_parts = {m.partition for m in read_topics(settings.kafka_bootstrap, [settings.topic_wms])}
    assert len(wms_parts) == 1  # the other partitions were never written
    decoder = Decoder(default_store())
    alerts = read_topics(settings.kafka_bootstrap, [settings.topic_drift_alerts])
    on_topic = [decoder.decode(m.value)[1] for m in alerts]
    assert [a["alert_id"] for a in on_topic] == ["drift:snap-quiet"]


class _Told:
    """What a live partition tells the read progress."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def at_end(self, partition: int) -> None:
        self.calls.append(("end", partition))

    def reading(self, partition: int) -> None:
        self.calls.append(("reading", partition))


def _poll(part, until, timeout_s: float = 20.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got += part.next_batch()  # a live partition never ends: StopIteration would fail the test
        if until(got):
            return got
        time.sleep(0.01)
    raise AssertionError(f"not reached within {timeout_s} s; read {len(got)} records")


def _read_for(part, seconds: float) -> list:
    got: list = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got += part.next_batch()
        time.sleep(0.01)
    return got


def test_a_live_wms_partition_tells_when_it_reaches_the_end_of_its_log_and_keeps_reading(settings):
    raw = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for i in range(3):
        raw.produce(settings.topic_wms, f"v{i}".encode(), b"K", partition=0)
    assert raw.flush(10) == 0
    told = _Told()
    source = kafka_source.source(settings, progress=told)
    parts = {name: source.build_part("kafka_in", name, None) for name in source.list_parts()}
    try:
        p0, p1 = parts[f"0-{settings.topic_wms}"], parts[f"1-{settings.topic_wms}"]
        got = _poll(p0, lambda got: ("end", 0) in told.calls)
        assert [m.value for m in got] == [b"v0", b"v1", b"v2"] and told.calls == [("end", 0)]
        _poll(p1, lambda got: ("end", 1) in told.calls)  # never written: at its end from the start
        assert _read_for(p0, 0.5) == []
        assert told.calls == [("end", 0), ("end", 1)]  # said once, not at every idle poll

        # A new record: the partition is read again, and at its end again once it is read.
        raw.produce(settings.topic_wms, b"v3", b"K", partition=0)
        assert raw.flush(10) == 0
        got = _poll(p0, lambda got: got and told.calls[-1] == ("end", 0))
        assert [m.value for m in got] == [b"v3"] and p0.snapshot() == 4
        # Either ("reading", 0) then ("end", 0), or nothing new if the record and the end came in one batch.
        assert told.calls[2:] in ([], [("reading", 0), ("end", 0)])
        # Only the wms partitions tell: an empty orders partition at its end says nothing.
        before = list(told.calls)
        assert _read_for(parts[f"2-{settings.topic_orders}"], 1.0) == []
        assert told.calls == before
    finally:
        for part in parts.values():
            part.close()
        raw.flush(1)
