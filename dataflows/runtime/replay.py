"""`atp replay`: rebuild positions from the input log into a new generation of the keyspace.

The replay is the production flow with fresh state (the generation's own recovery store), reading
from the first offsets (or ``--start``) to the log's end, or, for a point-in-time rebuild, to the
first record whose log timestamp is at or after ``until``. It writes Redis only; the live dataflow
keeps serving the current generation meanwhile. Interrupted, it resumes from its own snapshots.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import redis

from core.config import Settings
from core.kafka_config import client_config
from dataflows import kafka, metrics
from dataflows.kafka import admin as kafka_admin
from dataflows.kafka.topicread import offsets_at, read_topics
from dataflows.runtime.recovery import RecoveryStore
from projection.generations import PIT, REPLAY, GenerationError, Spec, current, drop, for_generation, now_ms, read_meta
from projection.keys import READY, generations_of, keyspace_of

log = logging.getLogger(__name__)

Partition = tuple[str, int]


def part_name(tp: Partition) -> str:
    return f"{tp[0]}:{tp[1]}"


def parse_part(name: str) -> Partition:
    topic, _, partition = name.rpartition(":")
    return topic, int(partition)


@dataclass(frozen=True)
class Request:
    """What the operator asked for."""

    name: str
    until_ms: int | None = None
    formula_version: int = 1
    starts: dict[str, int] | None = None  # "topic:partition" -> first offset
    allow_truncated: bool = False
    resume: bool = False
    discard: bool = False


def prepare(settings: Settings, client: redis.Redis, req: Request) -> tuple[Settings, Spec]:
    """Check the request against Redis, the local store and the log; returns the generation's
    settings and its spec (new, or the interrupted replay's own when resuming)."""
    gens = generations_of(settings)
    gen = for_generation(settings, req.name)
    if current(client, gens) == req.name:
        raise GenerationError(f"generation '{req.name}' is current; replay into a new name")
    existing = Spec.load(gen.generation_dir)
    meta = read_meta(client, keyspace_of(gen))
    if (existing or meta or RecoveryStore(gen.recovery_dir).exists()) and req.discard:
        deleted = drop(settings, client, req.name)
        log.info("discarded generation '%s' (%d Redis keys)", req.name, deleted)
        existing, meta = None, None
    if existing is not None or meta is not None:
        if meta is not None and meta.get("state") == READY and meta.get("kind") in (REPLAY, PIT):
            raise GenerationError(f"generation '{req.name}' is already built; --discard rebuilds it")
        if not req.resume:
            raise GenerationError(
                f"generation '{req.name}' exists (an interrupted replay, or another dataflow's); "
                "--resume continues it, --discard deletes it and starts again")
        if existing is None:
            raise GenerationError(f"generation '{req.name}' has no spec in {gen.generation_dir}; --discard it")
        return gen, existing
    starts = dict(req.starts or {})
    _check_retention(settings, starts, req.allow_truncated)
    # A replay ends where the log ended when it started (the live dataflow takes over from there);
    # a point-in-time rebuild where the log passed ``until``.
    ends = _cut_offsets(settings, req.until_ms) if req.until_ms is not None else {
        part_name(tp): end for tp, end in targets(settings).items()}
    spec = Spec(req.name, PIT if req.until_ms is not None else REPLAY, req.formula_version, req.until_ms,
                starts, ends, now_ms())
    return gen, spec


def _check_retention(settings: Settings, starts: dict[str, int], allow_truncated: bool) -> None:
    lows = kafka_admin.low_offsets(settings)
    unknown = sorted(set(starts) - {part_name(tp) for tp in lows})
    if unknown:
        raise GenerationError(f"--start names partitions that are not input partitions: {', '.join(unknown)}")
    gone = {tp: low for tp, low in lows.items() if low > starts.get(part_name(tp), 0)}
    if gone and not allow_truncated:
        listed = ", ".join(f"{part_name(tp)} starts at {low}" for tp, low in sorted(gone.items()))
        raise GenerationError(
            f"the input log no longer holds its first records ({listed}): retention deleted them, so a "
            "replay would miss their effect. Keep input topics at retention.ms=-1 (as `atp topics create` "
            "does), or pass --allow-truncated to rebuild from what is left (positions then lack the "
            "deleted events), or --start at offsets you have a reason to trust.")
    for tp, low in gone.items():
        starts[part_name(tp)] = max(low, starts.get(part_name(tp), 0))


def _cut_offsets(settings: Settings, until_ms: int) -> dict[str, int]:
    """Per input partition, the first offset whose log timestamp is at or after ``until_ms``.

    From the broker's time index (``offsets_for_times``), checked against the log; where the broker
    answers that request wrongly (the embedded tansu answers 0), a scan of the timestamps, which is
    exact on every broker and reads at raw-consume speed.
    """
    now = targets(settings)
    indexed = offsets_at(client_config(settings), now, until_ms)
    if indexed is not None:
        return {part_name(tp): off for tp, off in indexed.items()}
    log.info("the broker's offsets_for_times answer does not match its log: finding the cut by a scan")
    ends: dict[str, int] = {}
    for m in read_topics(client_config(settings), list(settings.input_topics), ends=now):
        name = part_name((m.topic, m.partition))
        if name not in ends and m.timestamp_ms >= until_ms:
            ends[name] = m.offset
    for tp, end in now.items():  # partitions never reaching until: all of them
        ends.setdefault(part_name(tp), end)
    return ends


def bounds_of(spec: Spec) -> kafka.Bounds:
    """The spec's ``topic:partition`` offsets, keyed like Bytewax's partitions for the source."""

    def keyed(offsets: dict[str, int]) -> dict[str, int]:
        return {f"{p}-{t}": off for (t, p), off in ((parse_part(k), v) for k, v in offsets.items())}

    return kafka.Bounds(keyed(spec.ends), keyed(spec.starts))


class Progress(threading.Thread):
    """Reads the decode step's consumed offsets and reports records/s, ETA and the replay metrics."""

    def __init__(self, spec: Spec, show: Any = None, interval_s: float = 0.5) -> None:
        super().__init__(name="atp-replay-progress", daemon=True)
        self._targets = {parse_part(p): end for p, end in spec.ends.items()}
        self._first = {tp: spec.starts.get(part_name(tp), 0) for tp in self._targets}
        self.total = sum(max(0, end - self._first[tp]) for tp, end in self._targets.items())
        self.read = 0
        self._show = show  # called with (read, total)
        self._interval = interval_s
        self.stopped = threading.Event()

    def consumed(self) -> dict[Partition, int]:
        out: dict[Partition, int] = {}
        for metric in metrics.INPUT_OFFSET.collect():
            for sample in metric.samples:
                out[(sample.labels["topic"], int(sample.labels["partition"]))] = int(sample.value)
        return out

    def tick(self) -> None:
        seen = self.consumed()
        read = sum(max(0, min(seen.get(tp, 0), end) - self._first[tp]) for tp, end in self._targets.items())
        if read > self.read:
            metrics.REPLAY_EVENTS.inc(read - self.read)
            self.read = read
        metrics.REPLAY_LAG.set(self.total - self.read)
        if self._show is not None:
            self._show(self.read, self.total)

    def run(self) -> None:
        while not self.stopped.wait(self._interval):
            self.tick()


def targets(settings: Settings) -> dict[Partition, int]:
    out = {}
    for key, end in kafka_admin.end_offsets(settings).items():
        index, _, topic = key.partition("-")
        out[(topic, int(index))] = end
    return out
