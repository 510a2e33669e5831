"""Dead letters: list them by reason, show one, and redrive fixed or now-valid ones to their source.

A dead letter is named by its source coordinates, ``topic:partition:offset`` (the ``atp.source.*``
headers), so the same record dead-lettered twice (at-least-once output after a crash) is one entry.

Redrive is idempotent: every redriven record carries ``atp.redrive.source``, and records whose source
was already redriven (found by reading the source topics) are skipped. The fold's event-id
de-duplication would absorb a second copy anyway, but only within its window.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from bytewax.connectors.kafka import KafkaSourceMessage

from core.config import Settings
from core.errors import AtpError
from core.kafka_config import client_config, metadata
from dataflows import kafka as hdr
from dataflows.decode import DecodeStep, is_dead_letter
from dataflows.jsonl import normalise
from dataflows.kafka.producer import RECORD_OF_ALIAS, EventProducer
from dataflows.kafka.topicread import read_topics
from schemas import Decoder, Encoder, default_store
from schemas.codec import registry_client
from state.errors import InvalidEvent
from state.events import make_key

REDRIVE_HEADER = hdr.REDRIVE_SOURCE  # the dead letter a redriven record came from


@dataclass(frozen=True)
class DeadLetterEntry:
    source: str  # topic:partition:offset
    topic: str
    reason: str
    error_class: str
    message: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, str] = field(default_factory=dict)
    copies: int = 1


def parse_source(text: str) -> str:
    """Check ``topic:partition:offset`` and return it."""
    parts = text.rsplit(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2].isdigit():
        raise AtpError(f"{text!r} is not topic:partition:offset (as `atp dlq list` prints it)")
    return text


def skip(settings: Settings, text: str) -> tuple[bool, str]:
    """Put ``topic:partition:offset`` on the skip list (reason ``skipped``): from then on the dataflow
    dead-letters that record unread. Returns (whether it was new, a note on when it takes effect)."""
    from dataflows.runtime.recovery import RecoveryStore
    from dataflows.skiplist import SKIP_FILE, SKIPPED, add_skip, parse_where

    where = parse_where(parse_source(text))
    assert where is not None
    topic, partition, offset = where
    if topic not in settings.input_topics:
        raise AtpError(f"{topic!r} is not an input topic of this dataflow ({', '.join(settings.input_topics)})")
    added = add_skip(settings.state_dir / SKIP_FILE, where, SKIPPED, "skipped by an operator (atp dlq skip)")
    store = RecoveryStore(settings.recovery_dir)
    committed = store.committed_offsets()[1].get(f"{partition}-{topic}", -1) if store.exists() else -1
    if offset < committed:
        note = (f"already processed (generation '{settings.generation}' has committed {topic}:{partition} up to "
                f"{committed}): the skip applies only if it is read again (`atp reset`, a replay)")
    else:
        note = "a running dataflow dead-letters it if it has not read it yet (within a second); otherwise the next start does"
    return added, note


def read_dead_letters(settings: Settings) -> dict[str, DeadLetterEntry]:
    """Every dead letter, keyed by source coordinates, oldest first."""
    out: dict[str, DeadLetterEntry] = {}
    metadata(settings)  # a clear error first, when the broker cannot be reached or refuses the credentials
    for m in read_topics(client_config(settings), [settings.topic_dead_letter]):
        h = m.headers
        source = f"{h.get('atp.source.topic')}:{h.get('atp.source.partition')}:{h.get('atp.source.offset')}"
        if source in out:
            out[source] = replace(out[source], copies=out[source].copies + 1)
            continue
        out[source] = DeadLetterEntry(source, h.get(hdr.SOURCE_TOPIC, "?"), h.get(hdr.ERROR_REASON, "?"),
                                      h.get(hdr.ERROR_CLASS, "?"), h.get(hdr.ERROR_MESSAGE, ""),
                                      m.key, m.value, h)
    return out


def summary(entries: Iterable[DeadLetterEntry]) -> Counter[tuple[str, str]]:
    return Counter((e.reason, e.topic) for e in entries)


def already_redriven(settings: Settings) -> set[str]:
    """Sources that a redrive already re-published (read from the input topics)."""
    return {m.headers[REDRIVE_HEADER] for m in read_topics(client_config(settings), list(settings.input_topics))
            if REDRIVE_HEADER in m.headers}


@dataclass
class RedrivePlan:
    send: list[tuple[DeadLetterEntry, bytes | None, bytes | None]] = field(default_factory=list)  # entry, key, value
    skipped_done: list[str] = field(default_factory=list)
    still_invalid: list[tuple[str, str]] = field(default_factory=list)  # source, why


class Redriver:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        registry = registry_client(settings.schema_registry_url) if settings.schema_registry_url else None
        self._check = DecodeStep(Decoder(default_store(), registry), settings.input_topics)
        self._encoder = Encoder(default_store(), registry)
        self._alias_of = {settings.topic_alias(a): a for a in RECORD_OF_ALIAS}

    def plan(self, entries: list[DeadLetterEntry], fixes: dict[str, dict[str, Any]]) -> RedrivePlan:
        """What to re-publish: each entry's fixed event if given, else its original bytes if the
        dataflow would accept them now (e.g. after a schema revision was added)."""
        done = already_redriven(self.settings)
        plan = RedrivePlan()
        for e in entries:
            if e.source in done:
                plan.skipped_done.append(e.source)
                continue
            key, value = e.key, e.value
            fix = fixes.get(e.source)
            if fix is not None:
                alias = self._alias_of.get(e.topic)
                if alias is None:
                    plan.still_invalid.append((e.source, f"{e.topic} is not an input topic"))
                    continue
                try:
                    record = normalise(alias, fix)
                except InvalidEvent as exc:
                    plan.still_invalid.append((e.source, f"fix: {exc.reason}: {exc}"))
                    continue
                key = make_key(record["sku"], record["location"]).encode()
                value = self._encoder.encode(RECORD_OF_ALIAS[alias], record, e.topic)
            why = self._why_invalid(e.topic, key, value)
            if why is not None:
                plan.still_invalid.append((e.source, why))
                continue
            plan.send.append((e, key, value))
        return plan

    def _why_invalid(self, topic: str, key: bytes | None, value: bytes | None) -> str | None:
        msg = KafkaSourceMessage(key, value, topic=topic, offset=-1, partition=-1)
        routed = self._check([msg])
        dead = [r for r in routed if is_dead_letter(r)]
        return f"{dead[0].reason}: {dead[0].message}" if dead else None

    def send(self, plan: RedrivePlan) -> int:
        producer = EventProducer(self.settings, **{"enable.idempotence": "true"})
        for e, key, value in plan.send:
            headers: list[tuple[str, str | bytes | None]] = [
                (k, v.encode()) for k, v in e.headers.items() if not k.startswith(("atp.source.", "atp.error."))]
            producer.send_raw(e.topic, key, value, headers + [(REDRIVE_HEADER, e.source.encode())])
        left = producer.flush(30)
        if producer.failed or left:
            raise AtpError(f"redrive could not deliver {producer.failed + left} record(s) ({producer.last_error}); "
                           "run it again (it skips what landed)")
        return len(plan.send)
