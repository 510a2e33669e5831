"""The Kafka connector of the flow: its value types here (what a record, a replay's bounds and a dead
letter are), the source, the output messages and sinks, and the admin side in the modules beside.

Like ``bytewax.connectors.kafka``, the types live at the package root so that the steps and the
modules of this package import down from here, never across.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, cast

from confluent_kafka import Consumer, KafkaError

# The headers a dead letter carries (written by ``output.DeadLetterMessage``, read by ``atp dlq``).
SOURCE_TOPIC = "atp.source.topic"
SOURCE_PARTITION = "atp.source.partition"
SOURCE_OFFSET = "atp.source.offset"
SOURCE_BYTES = "atp.source.bytes"
ERROR_REASON = "atp.error.reason"
ERROR_CLASS = "atp.error.class"
ERROR_MESSAGE = "atp.error.message"
ERROR_STEP = "atp.error.step"
ERROR_DROPPED = "atp.error.dropped"
# The refused record's correlation_id, when it was decoded far enough to have one (lineage).
SOURCE_CORRELATION_ID = "atp.source.correlation_id"
REDRIVE_SOURCE = "atp.redrive.source"


@dataclass(frozen=True)
class Bounds:
    """Offsets a replay reads, per Bytewax partition (``{index}-{topic}``): from ``starts`` (default:
    the beginning) up to, not including, ``ends``."""

    ends: Mapping[str, int]
    starts: Mapping[str, int] = field(default_factory=dict)


class Consumed(Protocol):
    """A message as a consumer returns it. confluent-kafka's stubs type every field of ``Message`` as
    optional (one can be made by hand); one that a consumer returned without an error has its topic,
    partition and offset. An error may lack them: the flow only logs it or passes it on. Headers are
    typed as Bytewax's ``KafkaSourceMessage`` types them."""

    def error(self) -> KafkaError | None: ...
    def topic(self) -> str: ...
    def partition(self) -> int: ...
    def offset(self) -> int: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> list[tuple[str, bytes]] | None: ...
    def timestamp(self) -> tuple[int, int]: ...
    def latency(self) -> float | None: ...


def consume(consumer: Consumer, num_messages: int, timeout_s: float) -> list[Consumed]:
    """``consumer.consume``, typed as what it returns (see ``Consumed``)."""
    return cast("list[Consumed]", consumer.consume(num_messages, timeout_s))


def poll(consumer: Consumer, timeout_s: float) -> Consumed | None:
    """``consumer.poll``, typed as what it returns (see ``Consumed``)."""
    return cast("Consumed | None", consumer.poll(timeout_s))


class InputMessage:
    """One input record, as the decode step and the dead letters read it: the fields of Bytewax's
    ``KafkaSourceMessage`` the flow uses. That one is a frozen dataclass: making it took 1.1 to
    1.5 us a record (every field set through ``object.__setattr__``), this one 0.2."""

    __slots__ = ("key", "value", "topic", "headers", "offset", "partition")

    def __init__(self, m: Consumed) -> None:
        self.key: bytes | None = m.key()
        self.value: bytes | None = m.value()
        self.topic: str = m.topic()
        self.headers: list[tuple[str, bytes]] | None = m.headers()
        self.offset: int = m.offset()
        self.partition: int = m.partition()


class SourceMessage(Protocol):
    """What a dead letter keeps of its record: an ``InputMessage``, Bytewax's ``KafkaSourceMessage``
    (`atp dlq` re-drives), or a stand-in for a record that has none (``dataflows.guard.SourceRecord``)."""

    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def topic(self) -> str | None: ...
    @property
    def headers(self) -> list[tuple[str, bytes]] | None: ...
    @property
    def offset(self) -> int | None: ...
    @property
    def partition(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the flow cannot use, with why; it goes to the dead-letter topic unchanged."""

    msg: SourceMessage
    reason: str
    error_class: str
    message: str
    step: str = "decode"  # the step that refused it (atp.error.step)
    correlation_id: str | None = None  # the record's, when decoded far enough (atp.source.correlation_id)
