"""The input partitions on a real broker: each record read once, in offset order, with the fields
the decode step and the dead letters use, and the offset to resume from."""

from __future__ import annotations

import time

import pytest

from dataflows import kafka
from dataflows.kafka import admin as kafka_admin
from dataflows.kafka import source as kafka_source
from dataflows.kafka.producer import EventProducer

pytestmark = pytest.mark.integration


def _drain(part, timeout_s: float = 20.0) -> list:
    out = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            out += part.next_batch()
        except StopIteration:
            return out
    raise AssertionError(f"the partition did not end within {timeout_s} s")


def _send(settings, n: int) -> None:
    producer = EventProducer(settings)
    for i in range(n):
        headers = [("h", str(i).encode())] if i % 2 else None
        producer.send_raw(settings.topic_wms, f"K{i}".encode(), f"v{i}".encode(), headers=headers)
    assert producer.flush() == 0


def test_the_live_partition_reads_each_record_with_its_fields_and_resumes_after_the_last(settings):
    _send(settings, 5)
    source = kafka_source.source(settings, tail=False)  # tail=False: the partition ends at its end
    parts = [p for p in source.list_parts() if p.endswith(settings.topic_wms)]
    got, resume = [], {}
    for name in parts:
        part = source.build_part("kafka_in", name, None)
        assert isinstance(part, kafka_source.LivePartition)
        got += _drain(part)
        resume[name] = part.snapshot()
        part.close()
    assert sorted(m.value for m in got) == [f"v{i}".encode() for i in range(5)]
    for m in got:
        assert isinstance(m, kafka.InputMessage) and m.topic == settings.topic_wms
        i = int(m.value[1:])
        assert m.key == f"K{i}".encode() and m.headers == ([("h", str(i).encode())] if i % 2 else None)
    read = {}
    for m in got:
        read.setdefault(f"{m.partition}-{m.topic}", []).append(m.offset)
    for name, offsets in read.items():  # in offset order, and the snapshot is the next offset to read
        assert offsets == sorted(offsets) and resume[name] == offsets[-1] + 1
    # Resumed from its snapshot, a partition reads nothing again.
    name = next(iter(read))
    again = source.build_part("kafka_in", name, resume[name])
    assert _drain(again) == []
    again.close()


def test_a_bounded_partition_stops_at_its_end_offset(settings):
    _send(settings, 6)
    ends = {name: end for name, end in kafka_admin.end_offsets(settings).items() if name.endswith(settings.topic_wms)}
    name, end = max(ends.items(), key=lambda kv: kv[1])
    source = kafka_source.source(settings, bounds=kafka.Bounds({name: end - 1}))
    part = source.build_part("kafka_in", name, None)
    got = _drain(part)
    part.close()
    assert [m.offset for m in got] == list(range(end - 1)) and part.snapshot() == end - 1
    assert all(isinstance(m, kafka.InputMessage) for m in got)
