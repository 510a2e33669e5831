"""The ATP logic every peer runs: the dataflow's own decoder, validation and pure fold.

The peers differ only in how they move data (a plain consumer loop, Quix Streams, a periodic
batch), so what they compute is the same and the oracle check of each is meaningful. Location-wide
safety-stock controls need the dataflow's location directory; the peers' input has none.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from core import gctune, memtrim
from core.config import Settings, load_settings
from core.kafka_config import client_config
from core.procinfo import own_peak_rss_mib
from dataflows.kafka import Consumed, consume
from schemas import DecodeError, Decoder, default_store
from state import events as ev
from state.errors import InvalidEvent
from state.fold import KeyState, apply
from state.position import Position, position
from state.safety import SafetyStock

Routed = tuple[str, ev.Event]


def start_process() -> Settings:
    """The settings of a benchmark process (a peer, a ladder rung), with the memory tuning `atp run`
    applies (the collector's thresholds, the heap trimming), so each is compared on equal terms."""
    gctune.tune()
    settings = load_settings()
    memtrim.start(settings.malloc_trim_s)
    return settings


class AtpLogic:
    def __init__(self, settings: Settings) -> None:
        self.decoder = Decoder(default_store())
        self.parsers = {t: ("." + rec, ev.PARSERS[rec]) for t, rec in settings.input_topics.items()}
        self.safety = SafetyStock.from_file(settings.safety_stock_file)
        self.dedup_ms, self.lateness_ms = settings.dedup_window_ms, settings.lateness_ms
        self.formula = settings.formula_version or 1
        self.invalid = 0

    def check(self, topic: str, key: bytes | None, value: bytes | None) -> tuple[dict[str, Any], ev.Event] | None:
        """The decoded record and its event, or None (counted) when it is not valid input for ``topic``."""
        suffix, parse = self.parsers[topic]
        try:
            name, record = self.decoder.decode(value)
            if not name.endswith(suffix):
                raise InvalidEvent("wrong_topic", name)
            event = parse(record)
        except (DecodeError, InvalidEvent):
            self.invalid += 1
            return None
        if key is None or key.decode("utf-8", "replace") != ev.kafka_key(event.sku, event.location):
            self.invalid += 1
            return None
        return record, event

    def parse(self, topic: str, record: dict[str, Any]) -> ev.Event:
        """A record that passed :meth:`check` (after a trip through a repartition topic)."""
        return self.parsers[topic][1](record)

    @staticmethod
    def route(event: ev.Event) -> list[Routed]:
        """An event by sku@location key, plus the destination of a transfer (as the decode step does)."""
        return ev.fan_out(event)

    def fold(self, state: KeyState | None, event: ev.Event) -> KeyState:
        if state is None:
            assert event.sku is not None  # the peers' input has no location-wide controls (see above)
            state = KeyState(event.sku, event.location)
        apply(state, event, self.dedup_ms, self.lateness_ms)
        return state

    def position(self, state: KeyState) -> Position:
        return position(state, self.safety.for_state(state), int(time.time() * 1000), self.formula)


def read_input(settings: Settings, ends: dict[str, int], group: str, batch: int = 10_000) -> Iterator[Consumed]:
    """Every input record up to ``ends`` (``{index}-{topic}`` -> end offset), read from the beginning
    with ``assign()``; the consumer is closed when the last partition reaches its end."""
    consumer = Consumer(client_config(settings, {"group.id": group, "enable.auto.commit": False,
                                                 "fetch.max.bytes": 52428800}))
    parts = {}
    for name, end in ends.items():
        index, topic = name.split("-", 1)
        if end > 0:
            parts[(topic, int(index))] = end
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in parts])
    try:
        while parts:
            for m in consume(consumer, batch, 0.05):
                if m.error() is not None:
                    continue
                if m.offset() + 1 >= parts.get((m.topic(), m.partition()), 0):
                    parts.pop((m.topic(), m.partition()), None)
                yield m
    finally:
        consumer.close()


def report(records: int, first: float | None, last: float | None, **extra: Any) -> None:
    """The line a peer child prints: records and the seconds from its first record to its last write."""
    seconds = (last - first) if first is not None and last is not None else 0.0
    print(json.dumps({"records": records, "seconds": seconds, "peak_rss_mib": own_peak_rss_mib(), **extra}))


def load_ends(path: str) -> dict[str, int]:
    return json.loads(Path(path).read_text())
