"""Point-in-time cuts from the broker's time index, checked against the log, with the scan as the
fallback for a broker that answers ``offsets_for_times`` wrongly (the embedded tansu answers 0)."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from dataflows.kafka.topicread import offsets_at, read_topics
from tests.conftest import BROKER

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000


def scan(settings, topics, ends, at_ms):
    cut = {}
    for m in read_topics(settings.kafka_bootstrap, topics, ends=ends):
        if (m.topic, m.partition) not in cut and m.timestamp_ms >= at_ms:
            cut[(m.topic, m.partition)] = m.offset
    return {tp: cut.get(tp, end) for tp, end in ends.items()}


def test_the_cut_from_the_time_index_is_the_scan_s_cut(settings):
    topic = settings.topic_wms
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for p in range(settings.topic_partitions):
        for i in range(50):
            producer.produce(topic, b"v", b"k", partition=p, timestamp=T0 + i * 1000 + p)
    assert producer.flush(30) == 0
    ends = {(topic, p): 50 for p in range(settings.topic_partitions)}
    for at in (T0 - 1, T0 + 20_500, T0 + 49_000, T0 + 10**9):
        indexed = offsets_at(settings.kafka_bootstrap, ends, at)
        expected = scan(settings, [topic], ends, at)
        if BROKER == "kafka":
            assert indexed == expected, at  # a real broker's time index is used, and exact
        else:
            assert indexed in (None, expected), at  # a wrong answer is caught, never used
    assert expected == ends  # past every record: the end
