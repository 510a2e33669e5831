"""The Kafka source of the flow: live partitions (idle detection), bounded replays, careful reading."""

from __future__ import annotations

import logging
import time
from typing import Any

from bytewax.connectors.kafka import KafkaError as SourceError
from bytewax.connectors.kafka import (
    KafkaSource,
    KafkaSourceMessage,
    _KafkaSourcePartition,  # bytewax is pinned (0.21.1); see LivePartition
)
from bytewax.inputs import StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from core.config import Settings
from core.kafka_config import ClientConfig, security_config
from dataflows import metrics
from dataflows.kafka import Bounds, InputMessage, consume
from dataflows.kafka.careful import CAREFUL
from dataflows.kafka.progress import STOCK_PROGRESS

log = logging.getLogger(__name__)


IDLE_CONFIRM_S = 0.5  # how often an idle wms partition's end is confirmed with the broker


IDLE_DISTRUST_S = 30.0  # after the broker was away, how long the end of a partition is not taken as idle


class LivePartition(_KafkaSourcePartition):
    """Bytewax's partition of the live source, emitting ``InputMessage``s. Everything else (the
    consumer, its offsets and snapshots, errors as data) is Bytewax's; ``next_batch`` is its own
    with the message type changed, so a Bytewax upgrade re-checks it.

    The consumer reports the end of the partition (``enable.partition.eof``) whenever it has read
    everything written: a tailing partition tells ``progress`` (the wms partitions: their idle rule,
    docs/idle-partitions.md) and reads on; one that does not tail ends there."""

    _tail = False
    _progress: Any = None  # a StockProgress (at_end, reading) for the wms partitions
    _at_end = False  # the last thing ``progress`` was told
    _confirmed = 0.0  # monotonic time the broker last confirmed the end of an idle partition
    _distrust_until = 0.0  # after the broker was away: the end of the log is not taken as idle before this

    def next_batch(self) -> list[Any]:
        metrics.loop_beat()
        if self._eof:
            raise StopIteration()
        batch: list[Any] = []
        last_offset = None
        end_at = -1  # len(batch) when the consumer last reported the end of the partition
        lost = False  # the consumer reported an error (the broker away, for one)
        # Careful mode (crash loop, dataflows/skiplist.py, dataflows/runtime/crashguard.py): one record at a time, noted before it is emitted.
        for msg in CAREFUL.consume(self._consumer) if CAREFUL.on else consume(self._consumer, self._batch_size, 0.001):
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    end_at = len(batch)
                    if self._tail:
                        continue  # records written since may follow in this very batch
                    self._eof = True  # this batch is emitted; the next call ends the partition
                    break
                if self._raise_on_errors:
                    raise RuntimeError(f"error consuming from Kafka topic `{self._topic!r}`: {error}")
                lost = True
                batch.append(SourceError(error, KafkaSourceMessage(msg.key(), msg.value(), msg.topic(),
                                                                    msg.headers() or [], msg.latency(), msg.offset(),
                                                                    msg.partition(), msg.timestamp())))
            else:
                batch.append(InputMessage(msg))
            last_offset = msg.offset()
        if last_offset is not None:
            self._offset = last_offset + 1  # resume from the next message
        if self._progress is not None:
            now = time.monotonic()
            if lost:  # the consumer lost the broker: see _confirm_idle
                self._distrust_until = now + IDLE_DISTRUST_S
            if end_at == len(batch) and now < self._distrust_until:
                pass  # at the end, but records held in producers during the outage may still come
            elif end_at == len(batch):  # nothing read after the end: idle
                self._confirmed = now
                if not self._at_end:
                    self._at_end = True
                    self._progress.at_end(self._part_idx)
            elif batch and self._at_end:  # read again: before the decode step sees the records
                self._at_end = False
                self._progress.reading(self._part_idx)
            elif self._at_end and now - self._confirmed > IDLE_CONFIRM_S:
                self._confirm_idle()
        return batch

    def _confirm_idle(self) -> None:
        """An idle partition stays idle only while the broker confirms it. Nothing read can also
        mean the broker is away (killed, paused, unreachable): records written before the outage may
        not have been fetched, and a snapshot must not be compared before they are. So, every
        ``IDLE_CONFIRM_S``, ask the broker for the partition's end; not answered, or past what was
        read, the partition is read from again (it holds back the progress) until its next end."""
        self._confirmed = time.monotonic()
        tp = TopicPartition(self._topic, self._part_idx)
        high: int | None
        read_to: int | None
        try:
            _, high = self._consumer.get_watermark_offsets(tp, timeout=IDLE_CONFIRM_S, cached=False)
            read_to = self._consumer.position([tp])[0].offset  # the next offset to fetch (at the end: the end)
        except KafkaException:
            high = read_to = None
        if high is None or read_to is None:
            # The broker is away. Records its producers could not deliver meanwhile arrive after it
            # is back, in any order across topics: the end of this partition proves nothing for a
            # while after that (a snapshot then waits for its key's own changes, or its timeout).
            self._distrust_until = time.monotonic() + IDLE_DISTRUST_S
        if high is None or read_to is None or (read_to >= 0 and high > read_to):
            self._at_end = False
            self._progress.reading(self._part_idx)


class InputSource(KafkaSource):
    """Bytewax's source with ``LivePartition``s, whose partition listing gets no consumer-only
    settings: its admin client would warn about each one (CONFWARN ... is a consumer property)
    at every start. ``progress`` is told when a partition of ``progress_topic`` (wms) reaches the
    end of its log or is read again."""

    def __init__(self, *args: Any, progress: Any = None, progress_topic: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._progress, self._progress_topic = progress, progress_topic

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> Any:
        idx, topic = for_part.split("-", 1)
        if topic not in self._topics:
            raise RuntimeError(f"cannot resume partition {for_part!r}: topic {topic!r} is not an input")
        # As KafkaSource.build_part: offsets are kept by the recovery store, not a consumer group.
        config = {"group.id": "BYTEWAX_IGNORED", "enable.auto.commit": "false",
                  "bootstrap.servers": ",".join(self._brokers), "statistics.interval.ms": 1000, **self._add_config,
                  "enable.partition.eof": "true"}  # tailing too: the end of a wms partition makes it idle
        part = LivePartition(step_id, config, topic, int(idx), self._starting_offset, resume_state,
                             self._batch_size, self._raise_on_errors)
        part._tail = self._tail
        if topic == self._progress_topic:
            part._progress = self._progress
        return part

    def list_parts(self) -> list[str]:
        config: ClientConfig = {"bootstrap.servers": ",".join(self._brokers),
                                **{k: v for k, v in self._add_config.items() if k not in _CONSUMER_ONLY}}
        md = AdminClient(config).list_topics(timeout=10)
        parts = []
        for topic in self._topics:
            meta = md.topics.get(topic)
            if meta is None:
                raise RuntimeError(f"cannot list the partitions of Kafka topic {topic!r}: no such topic")
            if meta.error is not None:
                raise RuntimeError(f"cannot list the partitions of Kafka topic {topic!r}: {meta.error.str()}")
            parts += [f"{i}-{topic}" for i in meta.partitions]
        return parts


class BoundedKafkaSource(InputSource):
    """Ends each partition at a fixed offset (``{index}-{topic}`` -> the first offset not to read).

    A replay must end where the log ended *when the replay started*: end-of-partition never comes
    while live traffic keeps the partitions growing. Its snapshots are the next offset to read, like
    ``KafkaSource``'s, so the live dataflow resumes a finished replay where it stopped.
    """

    def __init__(self, *args: Any, bounds: Bounds, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ends, self._starts = dict(bounds.ends), dict(bounds.starts)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> Any:
        end = self._ends.get(for_part)
        if end is None:
            return super().build_part(step_id, for_part, resume_state)
        index, topic = for_part.split("-", 1)
        config = {"group.id": "atp-replay", "enable.auto.commit": "false",
                  "bootstrap.servers": ",".join(self._brokers), **self._add_config}
        start = self._starts.get(for_part, OFFSET_BEGINNING) if resume_state is None else resume_state
        return _RangePartition(Consumer(config), topic, int(index), start, end, self._batch_size)


class _RangePartition(StatefulSourcePartition[Any, int]):
    def __init__(self, consumer: Consumer, topic: str, index: int, start: int, end: int, batch_size: int) -> None:
        if start < 0:  # "the beginning": the first retained offset, so an empty range ends at once
            start = consumer.get_watermark_offsets(TopicPartition(topic, index), timeout=10)[0]
        consumer.assign([TopicPartition(topic, index, start)])
        self._consumer, self._next, self._end, self._batch = consumer, start, end, batch_size

    def next_batch(self) -> list[Any]:
        metrics.loop_beat()
        if self._next >= self._end:
            raise StopIteration()
        want = max(1, min(self._batch, self._end - self._next))
        out = []
        for m in consume(self._consumer, want, 0.001):
            if m.error() is not None:
                log.warning("replay consumer error topic=%s partition=%s error=%s", m.topic(), m.partition(), m.error())
                continue
            if m.offset() >= self._end:
                break  # beyond the range: left for the live dataflow
            out.append(InputMessage(m))
            self._next = m.offset() + 1
        return out

    def snapshot(self) -> int:
        return self._next

    def close(self) -> None:
        self._consumer.close()


def source(settings: Settings, tail: bool = True, bounds: Bounds | None = None,
           progress: Any = STOCK_PROGRESS) -> KafkaSource:
    """``progress`` hears when a wms partition reaches the end of its log, or is read again."""
    if bounds is not None:
        return BoundedKafkaSource(
            settings.brokers, list(settings.input_topics), batch_size=settings.kafka_batch_size,
            add_config=_consumer_config(settings), raise_on_errors=False, bounds=bounds,
            progress=progress, progress_topic=settings.topic_wms)
    return InputSource(
        settings.brokers,
        list(settings.input_topics),
        tail=tail,
        batch_size=settings.kafka_batch_size,
        add_config=_consumer_config(settings),
        # Errors travel as data (logged by the decode step); the consumer retries on its own.
        raise_on_errors=False,
        progress=progress,
        progress_topic=settings.topic_wms,
    )


def _consumer_config(settings: Settings) -> dict[str, str]:
    return {**security_config(settings), "fetch.wait.max.ms": str(settings.kafka_fetch_wait_ms)}


_CONSUMER_ONLY = ("fetch.wait.max.ms",)
