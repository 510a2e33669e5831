"""What the topics' settings mean for this dataflow, read with DescribeConfigs when it starts.

The input topics are the source of truth: a position is a fold of every event of its key, and a
replay rebuilds from the first record. So an input topic that compacts is refused (Kafka would
delete older events of a key, even under a consumer that has not read them yet), and one that
deletes by age or size is a warning (the dataflow runs; a replay from the start will refuse
once records are gone). The availability feed should compact (the newest position per key).
A topic the broker does not describe is not checked; the embedded tansu describes only the
settings a topic was created with, which is what `atp topics create` sets.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import ConfigResource

from core.config import Settings
from core.errors import StackError
from dataflows.kafka.admin import admin

log = logging.getLogger(__name__)

DAY_MS = 86_400_000


@dataclass(frozen=True)
class Finding:
    topic: str
    refuse: bool
    message: str


def describe(settings: Settings, topics: list[str], timeout_s: float = 10.0) -> dict[str, dict[str, str]] | None:
    """Each topic's settings, or None when the broker does not describe them."""
    client = admin(settings)
    futures = client.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, t) for t in topics],
                                      request_timeout=timeout_s)
    out: dict[str, dict[str, str]] = {}
    for resource, fut in futures.items():
        try:
            entries = fut.result(timeout=timeout_s)
        except (KafkaException, TimeoutError) as exc:
            log.info("the broker did not describe %s's settings (%s): not checked", resource.name, exc)
            continue
        out[resource.name] = {name: e.value for name, e in entries.items() if e.value is not None}
    if not any(out.values()):
        log.info("the broker described no topic settings: not checked")
        return None
    return out


def _number(value: str | None) -> int:
    """A described size or time (-1: unlimited); a value that is not a whole number is not judged."""
    try:
        return int(float(value)) if value is not None else -1
    except ValueError:
        return -1


def findings(settings: Settings, configs: dict[str, dict[str, str]]) -> list[Finding]:
    found: list[Finding] = []
    for topic in settings.input_topics:
        c = configs.get(topic, {})
        if "compact" in c.get("cleanup.policy", "delete"):
            found.append(Finding(topic, True, (
                f"input topic {topic} has cleanup.policy={c['cleanup.policy']}: compaction deletes older events "
                "of a key, and positions are folded from all of them. Set cleanup.policy=delete and "
                f"retention.ms=-1 (kafka-configs --alter --entity-type topics --entity-name {topic} "
                "--add-config cleanup.policy=delete,retention.ms=-1)")))
        retention = _number(c.get("retention.ms"))
        if retention >= 0:
            found.append(Finding(topic, False, (
                f"input topic {topic} deletes records after {retention / DAY_MS:.1f} days (retention.ms={retention}): "
                "a replay from the beginning will refuse once they are gone (keep retention.ms=-1, as "
                "`atp topics create` does, or replay with --allow-truncated)")))
        if _number(c.get("retention.bytes")) >= 0:
            found.append(Finding(topic, False, (
                f"input topic {topic} deletes records beyond retention.bytes={c['retention.bytes']} per partition: "
                "a replay from the beginning will refuse once they are gone")))
    for topic in (settings.topic_availability, settings.topic_thresholds):
        policy = configs.get(topic, {}).get("cleanup.policy", "delete")
        if "compact" not in policy:
            found.append(Finding(topic, False, (
                f"{topic} has cleanup.policy={policy}: it is a feed of the newest value per key and should be "
                "compacted (cleanup.policy=compact), or it grows without end")))
    return found


def check(settings: Settings) -> list[Finding]:
    """Refuse what breaks the positions, warn about what breaks a replay; returns the warnings."""
    topics = [*settings.input_topics, settings.topic_availability, settings.topic_thresholds]
    configs = describe(settings, topics)
    if configs is None:
        return []
    found = findings(settings, configs)
    refused = [f.message for f in found if f.refuse]
    if refused:
        raise StackError("; ".join(refused))
    warnings = [f for f in found if not f.refuse]
    for f in warnings:
        log.warning("%s", f.message)
    return warnings
