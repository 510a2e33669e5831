"""Reading whole topics back from the broker: every message, in offset order within each partition."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from core import redact
from core.errors import StackError
from core.kafka_config import unreachable
from dataflows.kafka import consume


class ReadTimeout(StackError, TimeoutError):
    """The broker stopped answering a read (a TimeoutError too, for callers that wait it out)."""


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]
    timestamp_ms: int = 0  # the log timestamp (CreateTime or LogAppendTime, as the topic is set)


def _conf(client: Mapping[str, Any] | str, extra: dict[str, Any]) -> dict[str, Any]:
    """A client configuration (``core.kafka_config.client_config``), or bare bootstrap servers."""
    base = {"bootstrap.servers": client} if isinstance(client, str) else dict(client)
    return {**base, **extra}


def _bootstrap(client: Mapping[str, Any] | str) -> str:
    return client if isinstance(client, str) else str(client.get("bootstrap.servers", "?"))


def read_topics(client: Mapping[str, Any] | str, topics: list[str], timeout_s: float = 15.0,
                ends: dict[tuple[str, int], int] | None = None) -> Iterator[Message]:
    """Every message of ``topics`` from the beginning to each partition's end, or to ``ends`` (the
    first offset not to read: a log that keeps growing has no end to wait for). One consumer, all
    partitions assigned; partitions interleave, offsets within one stay in order.

    A broker that does not answer for ``timeout_s`` (at the start, or between two batches) ends the
    read with a StackError that names it (``ReadTimeout`` when it stopped in the middle)."""
    consumer = Consumer(_conf(client, {"group.id": "atp-topicread", "enable.auto.commit": False,
                                       "enable.partition.eof": True, "fetch.max.bytes": 52428800}))
    try:
        try:
            md = consumer.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            raise StackError(unreachable(_bootstrap(client), f"no answer within {timeout_s:g} s: "
                                                             f"{exc.args[0].str()}")) from None
        missing = [t for t in topics if t not in md.topics]
        if missing:
            raise StackError(f"topic(s) {', '.join(missing)} missing on {redact.text(_bootstrap(client))}; "
                             "run `atp topics create`")
        parts = [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in sorted(md.topics[t].partitions)]
        consumer.assign(parts)
        open_parts = {(tp.topic, tp.partition) for tp in parts}
        if ends is not None:
            open_parts -= {tp for tp, end in ends.items() if end <= 0}
        deadline = time.monotonic() + timeout_s
        while open_parts:
            # A short wait: consume() returns early only when the batch is full.
            msgs = consume(consumer, 10_000, 0.05)
            if not msgs:
                if time.monotonic() > deadline:
                    raise ReadTimeout(unreachable(_bootstrap(client), f"nothing read for {timeout_s:g} s before the "
                                                  f"end of {len(open_parts)} partition(s) of {', '.join(topics)}"))
                continue
            deadline = time.monotonic() + timeout_s
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        open_parts.discard((m.topic(), m.partition()))
                        continue
                    raise RuntimeError(f"reading {m.topic()}[{m.partition()}]: {err}")
                where = (m.topic(), m.partition())
                if where not in open_parts:
                    continue
                if ends is not None and m.offset() + 1 >= ends.get(where, 0):
                    open_parts.discard(where)
                    if m.offset() >= ends.get(where, 0):
                        continue
                headers = {k: v.decode() for k, v in (m.headers() or []) if v is not None}
                yield Message(m.topic(), m.partition(), m.offset(), m.key(), m.value(), headers, m.timestamp()[1])
    finally:
        consumer.close()


def offsets_at(client: Mapping[str, Any] | str, ends: dict[tuple[str, int], int], at_ms: int,
               timeout_s: float = 10.0) -> dict[tuple[str, int], int] | None:
    """Per partition, the first offset whose log timestamp is at or after ``at_ms`` (the end when
    none is), from the broker's time index (``offsets_for_times``). Each answer is checked against
    the log (the record there is at or after ``at_ms``, the one before it is not); None when one
    does not hold, for a broker that answers the request wrongly."""
    consumer = Consumer(_conf(client, {"group.id": "atp-topicread", "enable.auto.commit": False,
                                       "enable.partition.eof": True}))
    try:
        asked = [TopicPartition(t, p, at_ms) for (t, p) in ends]
        try:
            answered = consumer.offsets_for_times(asked, timeout=timeout_s)
        except KafkaException:  # not answered in time, or not at all: the caller scans instead
            return None
        found = {(tp.topic, tp.partition): min(tp.offset if tp.offset >= 0 else ends[(tp.topic, tp.partition)],
                                               ends[(tp.topic, tp.partition)])
                 for tp in answered}
        # The records to look at: the answer's and the one before it, read in one pass.
        wanted = {where: {at for at in (off - 1, off) if 0 <= at < ends[where]} for where, off in found.items()}
        seen = _timestamps(consumer, {w: min(ats) for w, ats in wanted.items() if ats}, wanted, timeout_s)
        for where, off in found.items():
            for at in wanted[where]:
                ts = seen.get((where, at))
                if ts is None:
                    if at < off:  # deleted by retention: nothing before the answer to check
                        continue
                    return None
                if (ts >= at_ms) != (at == off):
                    return None
        return found
    finally:
        consumer.close()


def _timestamps(consumer: Consumer, starts: dict[tuple[str, int], int], wanted: dict[tuple[str, int], set[int]],
                timeout_s: float) -> dict[tuple[tuple[str, int], int], int]:
    """The log timestamps of the ``wanted`` offsets, reading each partition from its start."""
    out: dict[tuple[tuple[str, int], int], int] = {}
    if not starts:
        return out
    consumer.assign([TopicPartition(t, p, off) for (t, p), off in starts.items()])
    open_parts = set(starts)
    deadline = time.monotonic() + timeout_s
    while open_parts and time.monotonic() < deadline:
        for m in consume(consumer, 1000, 0.2):
            where = (m.topic(), m.partition())
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    open_parts.discard(where)
                continue
            if m.offset() in wanted.get(where, ()):
                out[(where, m.offset())] = int(m.timestamp()[1])
            if m.offset() >= max(wanted.get(where, {-1})):
                open_parts.discard(where)
    return out
