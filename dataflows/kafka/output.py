"""What the flow writes to Kafka: positions, alerts and band changes as Avro records, dead letters with
their headers, and the sink that produces them."""

from __future__ import annotations

from collections.abc import Callable

from bytewax.connectors.kafka import KafkaSinkMessage

from core.config import Settings
from core.kafka_config import security_config
from dataflows import kafka as hdr
from dataflows.kafka import DeadLetter
from dataflows.kafka.sink import OutputSink, fit, size
from schemas import Encoder
from state.bands import BandChange
from state.drift import Alert
from state.position import Position

PRODUCER_CONFIG = {"linger.ms": "5", "compression.type": "lz4", "enable.idempotence": "true"}


def sink(settings: Settings) -> OutputSink:
    """One producer per worker for every output topic (feed, alerts, bands, dead letters)."""
    return OutputSink(settings.brokers, topic=None, add_config={**security_config(settings), **PRODUCER_CONFIG})


class RecordMessage:
    """An output (Position, Alert, BandChange: anything with ``key`` and ``as_dict()``) -> the Avro
    record ``record`` on ``topic``, keyed sku@location."""

    def __init__(self, encoder: Encoder, record: str, topic: str) -> None:
        self._encoder = encoder
        self._record = record
        self._topic = topic

    def __call__(self, item: Position | Alert | BandChange) -> KafkaSinkMessage[bytes, bytes]:
        value = self._encoder.encode(self._record, item.as_dict(), self._topic)
        return KafkaSinkMessage(item.key.encode(), value, topic=self._topic)


class FeedMessage(RecordMessage):
    """A Position -> AvailabilityChanged, stamped with the pipeline's watermark of the moment
    (``watermark()``: epoch ms or None; the same figure the API answers carry)."""

    def __init__(self, encoder: Encoder, topic: str, watermark: Callable[[], int | None]) -> None:
        super().__init__(encoder, "AvailabilityChanged", topic)
        self._watermark = watermark

    def __call__(self, item: Position | Alert | BandChange) -> KafkaSinkMessage[bytes, bytes]:
        record = item.as_dict()
        record["watermark"] = self._watermark()
        return KafkaSinkMessage(item.key.encode(), self._encoder.encode(self._record, record, self._topic),
                                topic=self._topic)


class DeadLetterMessage:
    """DeadLetter -> the original bytes on the dead-letter topic, with headers saying where and why."""

    def __init__(self, topic: str) -> None:
        self._topic = topic

    def __call__(self, dl: DeadLetter) -> KafkaSinkMessage[bytes | None, bytes | None]:
        m = dl.msg
        # A record near the size limit plus these headers would be over it: what does not fit is
        # left out and named (the record is still in its topic, at the offset given here).
        original = list(m.headers or [])
        total = size(m.key, m.value, original)
        key, value, original, dropped = fit(m.key, m.value, original)
        headers = original + [
            (hdr.SOURCE_TOPIC, str(m.topic).encode()),
            (hdr.SOURCE_PARTITION, str(m.partition).encode()),
            (hdr.SOURCE_OFFSET, str(m.offset).encode()),
            (hdr.ERROR_REASON, dl.reason.encode()),
            (hdr.ERROR_CLASS, dl.error_class.encode()),
            (hdr.ERROR_MESSAGE, dl.message.encode("utf-8", "replace")[:4000]),
            (hdr.ERROR_STEP, dl.step.encode()),
        ]
        if dl.correlation_id is not None:
            headers.append((hdr.SOURCE_CORRELATION_ID, dl.correlation_id.encode("utf-8", "replace")))
        if dropped:
            headers += [(hdr.ERROR_DROPPED, ",".join(dropped).encode()), (hdr.SOURCE_BYTES, str(total).encode())]
        return KafkaSinkMessage(key, value, topic=self._topic, headers=headers)
