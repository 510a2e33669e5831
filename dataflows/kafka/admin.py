"""The admin side of Kafka: topic creation, start-up checks, end and low offsets."""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from core.config import Settings
from core.errors import StackError
from core.kafka_config import client_config, metadata
from dataflows.kafka import poll

log = logging.getLogger(__name__)


def admin(settings: Settings) -> AdminClient:
    return AdminClient(client_config(settings))


def topic_specs(settings: Settings) -> list[NewTopic]:
    n = settings.topic_partitions
    compact = {"cleanup.policy": "compact"}
    keep = {"retention.ms": "-1"}  # the input log is the source of truth for replays
    return [
        *(NewTopic(t, n, 1, config=keep) for t in settings.input_topics),
        NewTopic(settings.topic_availability, n, 1, config=compact),
        NewTopic(settings.topic_dead_letter, n, 1, config=keep),
        NewTopic(settings.topic_drift_alerts, n, 1),
        NewTopic(settings.topic_thresholds, n, 1, config=compact),  # the newest band of every key
    ]


def create_topics(settings: Settings, timeout_s: float = 15.0) -> dict[str, str]:
    """Create every topic; returns topic -> ``created`` | ``exists``."""
    result: dict[str, str] = {}
    client = admin(settings)  # must outlive the futures
    futures = client.create_topics(topic_specs(settings), request_timeout=timeout_s)
    for topic, fut in futures.items():
        try:
            fut.result(timeout=timeout_s)
            result[topic] = "created"
        except KafkaException as exc:
            if exc.args[0].name() == "TOPIC_ALREADY_EXISTS":
                result[topic] = "exists"
            else:
                raise StackError(f"cannot create topic {topic}: {exc.args[0].str()}") from exc
    # A created topic is usable once each partition has a leader: until then a real broker answers
    # NOT_LEADER_FOR_PARTITION (a command run right after `atp topics create` would fail on it).
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        md = client.list_topics(timeout=timeout_s)
        if all(t in md.topics and md.topics[t].partitions and not md.topics[t].error
               and all(p.leader >= 0 for p in md.topics[t].partitions.values()) for t in result):
            break
        time.sleep(0.1)
    return result


def end_offsets(settings: Settings, timeout_s: float = 10.0) -> dict[str, int]:
    """The next offset of every input partition, keyed like Bytewax's source state (``{i}-{topic}``).

    The reported high watermark is read past to the partition's end (some brokers report it one
    producer batch short), so the result is exact for what was in the log when this ran.
    """
    consumer = Consumer(client_config(settings, {"group.id": "atp-end-offsets", "enable.auto.commit": False,
                                                 "enable.partition.eof": True}))
    try:
        md = consumer.list_topics(timeout=timeout_s)
        parts = [TopicPartition(t, i) for t in settings.input_topics for i in md.topics[t].partitions]
        ends: dict[tuple[str, int], int] = {}
        for tp in parts:
            _, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
            ends[(tp.topic, tp.partition)] = high
        consumer.assign([TopicPartition(t, i, off) for (t, i), off in ends.items()])
        open_parts = set(ends)
        deadline = time.monotonic() + timeout_s
        while open_parts and time.monotonic() < deadline:
            msg = poll(consumer, 0.5)
            if msg is None:
                continue
            where = (msg.topic(), msg.partition())
            err = msg.error()
            if err is None:
                ends[where] = max(ends[where], msg.offset() + 1)
            elif err.code() == KafkaError._PARTITION_EOF:
                open_parts.discard(where)
        return {f"{i}-{t}": off for (t, i), off in ends.items()}
    finally:
        consumer.close()


def low_offsets(settings: Settings, timeout_s: float = 10.0) -> dict[tuple[str, int], int]:
    """The earliest retained offset of every input partition (above 0: retention deleted the start)."""
    consumer = Consumer(client_config(settings, {"group.id": "atp-low-offsets", "enable.auto.commit": False}))
    try:
        md = consumer.list_topics(timeout=timeout_s)
        return {(t, i): consumer.get_watermark_offsets(TopicPartition(t, i), timeout=timeout_s)[0]
                for t in settings.input_topics for i in md.topics[t].partitions}
    finally:
        consumer.close()


def check_kafka(settings: Settings, timeout_s: float = 10.0) -> dict[str, Any]:
    """Fail fast (instead of hanging) when the broker is unreachable or an input topic is missing."""
    md: Any = metadata(settings, timeout_s)
    missing = [t for t in settings.all_topics if t not in md.topics]
    if missing:
        raise StackError(f"topics missing on {settings.kafka_bootstrap}: {', '.join(missing)}; run `atp topics create`")
    parts = {t: len(md.topics[t].partitions) for t in settings.input_topics}
    workers = settings.workers_total
    total = sum(parts.values())
    if total % workers:
        over = f"{workers} workers" if settings.processes == 1 else \
            f"{workers} workers ({settings.processes} processes x ATP_WORKERS={settings.workers})"
        raise StackError(
            f"{total} input partitions cannot be split evenly over {over} (Bytewax stalls when workers own "
            "uneven partition counts, upstream issue #556); choose a worker count that divides it"
        )
    return parts
