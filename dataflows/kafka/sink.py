"""The Kafka producer side: one message that cannot be produced is that message's problem, not the flow's.

Bytewax's ``KafkaSink`` lets a ``produce`` error escape, and that stops the dataflow; since the
same batch is produced again after the restart, it stops it for good. Two things made that
reachable by any producer: a dead letter is the original record plus its headers, so a record
near the broker's size limit becomes a dead letter over the producer's ``message.max.bytes``
(1,000,000 bytes by default); and nothing reported a message the broker refused after the call.

Kafka Streams' ``default.production.exception.handler`` is the reference: a record error
(too large, invalid) is logged, counted and skipped; anything else (the broker unreachable, a
fatal producer error, a message not delivered within ``message.timeout.ms``, a producer queue full
for a minute) still stops the flow, so that it restarts and produces the batch again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage
from bytewax.outputs import StatelessSinkPartition
from confluent_kafka import KafkaError, KafkaException, Producer

from dataflows.metrics import PRODUCE_ERRORS, loop_beat

log = logging.getLogger(__name__)

# librdkafka's default message.max.bytes is 1,000,000 bytes: a dead letter is kept under this,
# with room for the headers added to it.
DEAD_LETTER_MAX_BYTES = 900_000

# Errors of one message (it is skipped); every other error stops the flow.
RECORD_ERRORS = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG_SIZE, KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_MSG, KafkaError.INVALID_RECORD, KafkaError._INVALID_ARG,
})


HEADER_OVERHEAD = 10  # varint lengths and attributes of one record header on the wire, at most


def size(key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes | None]]) -> int:
    """An upper bound of a record's size on the wire, without the batch framing."""
    return len(key or b"") + len(value or b"") + sum(
        len(k.encode()) + len(v or b"") + HEADER_OVERHEAD for k, v in headers)


def fit(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]],
        limit: int = DEAD_LETTER_MAX_BYTES) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]], list[str]]:
    """Key, value and headers of a dead letter within ``limit`` bytes: the value goes first, then
    the original headers, then the key. Returns what was dropped (the record itself is still in
    its topic, at the offset the dead letter names)."""
    dropped: list[str] = []
    if size(key, value, headers) > limit:
        value = None
        dropped.append("value")
    if size(key, value, headers) > limit:
        headers = []
        dropped.append("headers")
    if size(key, value, headers) > limit:
        key = None
        dropped.append("key")
    return key, value, headers, dropped


def _skip(topic: str, err: KafkaError, key: bytes | None) -> None:
    PRODUCE_ERRORS.labels(topic, err.name()).inc()
    log.error("output message to %s skipped: %s (%s) key=%r", topic, err.name(), err.str(), (key or b"")[:200])


QUEUE_WAIT_S = 60.0  # how long a full producer queue is waited for before the flow stops


class _Partition(StatelessSinkPartition[KafkaSinkMessage[Any, Any]]):
    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self._undelivered: list[KafkaError] = []  # this batch's delivery errors that are not a record's

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            return
        if err.code() in RECORD_ERRORS:
            _skip(msg.topic(), err, msg.key())
        else:  # not delivered (the broker away longer than message.timeout.ms): the batch fails below
            PRODUCE_ERRORS.labels(msg.topic(), err.name()).inc()
            self._undelivered.append(err)

    def _produce(self, msg: KafkaSinkMessage[Any, Any]) -> None:
        deadline = None  # set at the first full queue: no clock read per message
        topic = msg.topic
        assert topic is not None  # OutputSink has no default topic: every message of the flow names its own
        while True:
            try:
                # The stub types headers as a list of (str, str | bytes | None): Bytewax's list of
                # (str, bytes) is one at run time, but a list is invariant.
                self._producer.produce(topic, value=msg.value, key=msg.key,
                                       headers=msg.headers,  # type: ignore[arg-type]
                                       timestamp=msg.timestamp, on_delivery=self._on_delivery)
                return
            except BufferError:  # the local queue is full: wait for room
                if deadline is None:
                    deadline = time.monotonic() + QUEUE_WAIT_S
                elif time.monotonic() > deadline:
                    raise KafkaException(KafkaError(KafkaError._QUEUE_FULL, f"the producer queue stayed full for "
                                                    f"{QUEUE_WAIT_S:.0f} s: is the broker reachable?")) from None
                self._producer.poll(1)
                loop_beat()
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() not in RECORD_ERRORS:
                    raise
                _skip(topic, err, msg.key)
                return

    def write_batch(self, items: list[KafkaSinkMessage[Any, Any]]) -> None:
        self._undelivered.clear()
        poll = self._producer.poll
        for msg in items:
            self._produce(msg)
            poll(0)
        while self._producer.flush(1.0) > 0:  # waits as flush() does, beating: waiting on the broker is no hang
            loop_beat()
        if self._undelivered:
            # The epoch is not committed: after the restart the batch is produced again (at least once).
            err = self._undelivered[0]
            raise KafkaException(KafkaError(err.code(), f"{len(self._undelivered)} output message(s) not "
                                                        f"delivered: {err.str()}"))

    def close(self) -> None:
        self._producer.flush()


class OutputSink(KafkaSink):
    """``KafkaSink`` (topic from each message) whose record errors are skipped, logged and counted."""

    # Bytewax annotates KafkaSink.build with its private partition class, not the sink partition type.
    def build(self, _step_id: str, worker_index: int, worker_count: int) -> _Partition:  # type: ignore[override]
        config = {"bootstrap.servers": ",".join(self._brokers), **self._add_config}
        return _Partition(Producer(config))
