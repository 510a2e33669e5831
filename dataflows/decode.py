"""Decode step: Kafka messages -> (key, event) pairs, or dead letters carrying the original message."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard

from bytewax.connectors.kafka import KafkaError

from dataflows import metrics
from dataflows.kafka import DeadLetter
from dataflows.kafka.progress import STOCK_PROGRESS, StockProgress
from dataflows.skiplist import SKIP, SkipList
from schemas import DecodeError, Decoder
from state import events as ev
from state import limits
from state.errors import InvalidEvent

if TYPE_CHECKING:
    pass


log = logging.getLogger(__name__)


_KNOWN_TYPES = ev.WAREHOUSE_TYPES | ev.ORDER_TYPES


Routed = tuple[str, ev.Event] | DeadLetter


@dataclass(frozen=True)
class TimeRules:
    """The event times no clock could have written (``state.limits.times``)."""

    skew_ms: int = limits.DEFAULT_SKEW_MS  # how far ahead of the wall clock an event time may be
    earliest_ms: int = limits.EARLIEST_MS
    clock: Callable[[], float] = time.time


class DecodeStep:
    """Callable for ``flat_map_batch``: decodes, validates, checks the key and fans out."""

    def __init__(self, decoder: Decoder, topics: Mapping[str, str], progress: StockProgress = STOCK_PROGRESS,
                 times: TimeRules = TimeRules(), skip: SkipList = SKIP) -> None:
        self._decoder = decoder
        self._skip = skip  # records to dead-letter unread (dataflows/skiplist.py, dataflows/runtime/crashguard.py); empty in normal runs
        self._times = times
        # topic -> (record full-name suffix, parser)
        self._topics = {t: ("." + rec, ev.PARSERS[rec]) for t, rec in topics.items()}
        self._offsets: dict[tuple[str, int], Any] = {}
        self._progress = progress

    def __call__(self, batch: list[Any]) -> list[Routed]:
        out: list[Routed] = []
        stock_times: dict[int, int] = {}  # wms partition -> newest event time in this batch
        self._track_offsets(batch)
        if self._skip:
            batch = self._skip.divert(batch, out)
        rules = self._times
        now_ms = int(rules.clock() * 1000)
        earliest, latest = rules.earliest_ms, now_ms + rules.skew_ms
        for msg in batch:
            if isinstance(msg, KafkaError):
                log.warning("kafka consumer error topic=%s partition=%s error=%s", msg.msg.topic, msg.msg.partition, msg.err)
                continue
            record: dict[str, Any] | None = None
            try:
                suffix, parse = self._topics[msg.topic]
                name, record = self._decoder.decode(msg.value)
                if not name.endswith(suffix):
                    raise InvalidEvent("wrong_topic", f"{name} does not belong on topic {msg.topic}")
                event = parse(record)
                key = ev.kafka_key(event.sku, event.location)
                if msg.key is None or msg.key.decode("utf-8", "replace") != key:
                    raise InvalidEvent("key_mismatch", f"Kafka key {msg.key!r} must be {key!r} "
                                       f"({'the location' if '@' not in key else 'sku@location'})")
                snapshot = event if type(event) is ev.InventorySnapshot else None
                if snapshot is not None or not earliest <= event.occurred_ms <= latest:
                    limits.times(name.rsplit(".", 1)[-1], event.occurred_ms, now_ms, rules.skew_ms, earliest,
                                 snapshot.as_of_ms if snapshot is not None else None)
            except (DecodeError, InvalidEvent) as exc:
                out.append(self._dead(msg, exc, record))
                continue
            event.src = msg
            if type(event) is ev.WarehouseEvent:
                if event.occurred_ms > stock_times.get(msg.partition, 0):
                    stock_times[msg.partition] = event.occurred_ms
                if event.event_type == "TRANSFER_OUT":
                    out.extend(ev.fan_out(event))
                    continue
            out.append((key, event))
        if stock_times:
            self._progress.saw(stock_times)
        return out

    def _track_offsets(self, batch: list[Any]) -> None:
        newest: dict[tuple[str, int], int] = {}
        for msg in batch:  # in offset order within a partition, so the last one wins
            if not isinstance(msg, KafkaError):
                newest[(msg.topic, msg.partition)] = msg.offset
        for where, offset in newest.items():
            gauge = self._offsets.get(where)
            if gauge is None:
                gauge = self._offsets[where] = metrics.INPUT_OFFSET.labels(where[0], str(where[1]))
            gauge.set(offset + 1)

    @staticmethod
    def _dead(msg: Any, exc: DecodeError | InvalidEvent, record: dict[str, Any] | None) -> DeadLetter:
        etype = record.get("event_type") if record else None
        label = etype if etype in _KNOWN_TYPES else (
            "SNAPSHOT" if record and "snapshot_id" in record
            else "SAFETY_STOCK_SET" if record and "safety_stock" in record else "unknown")
        metrics.EVENTS.inc((msg.topic, label, "dead_letter"))
        metrics.DEAD_LETTER.labels(exc.reason).inc()
        # Lineage: the record's correlation_id when it was decoded that far (and is a string at all).
        cid = record.get("correlation_id") if record else None
        cid = cid[:ev.MAX_EVENT_ID] if isinstance(cid, str) and cid else None
        log.info(
            "dead letter topic=%s partition=%s offset=%s key=%r correlation_id=%r reason=%s error=%s",
            msg.topic, msg.partition, msg.offset, msg.key, cid, exc.reason, exc,
        )
        return DeadLetter(msg, exc.reason, type(exc).__name__, str(exc), correlation_id=cid)


def is_dead_letter(item: object) -> TypeGuard[DeadLetter]:
    return type(item) is DeadLetter
