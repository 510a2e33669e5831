"""The Kafka connector of the flow: its value types here (what a record, a replay's bounds and a dead
letter are), the source, the output messages and sinks, and the admin side in the modules beside.

Like ``bytewax.connectors.kafka``, the types live at the package root so that the steps and the
modules of this package import down from here, never across.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bytewax.connectors.kafka import KafkaSourceMessage
from confluent_kafka import Message

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
REDRIVE_SOURCE = "atp.redrive.source"


@dataclass(frozen=True)
class Bounds:
    """Offsets a replay reads, per Bytewax partition (``{index}-{topic}``): from ``starts`` (default:
    the beginning) up to, not including, ``ends``."""

    ends: Mapping[str, int]
    starts: Mapping[str, int] = field(default_factory=dict)


class InputMessage:
    """One input record, as the decode step and the dead letters read it: the fields of Bytewax's
    ``KafkaSourceMessage`` the flow uses. That one is a frozen dataclass: making it took 1.1 to
    1.5 us a record (every field set through ``object.__setattr__``), this one 0.2."""

    __slots__ = ("key", "value", "topic", "headers", "offset", "partition")

    def __init__(self, m: Message) -> None:
        self.key: bytes | None = m.key()
        self.value: bytes | None = m.value()
        self.topic: str = m.topic()
        self.headers: list[tuple[str, bytes]] | None = m.headers()
        self.offset: int = m.offset()
        self.partition: int = m.partition()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the flow cannot use, with why; it goes to the dead-letter topic unchanged."""

    msg: InputMessage | KafkaSourceMessage[bytes | None, bytes | None]  # the latter from `atp dlq` re-drives
    reason: str
    error_class: str
    message: str
    step: str = "decode"  # the step that refused it (atp.error.step)
