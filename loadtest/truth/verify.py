"""After a chaos run: fold the log with the oracle and compare it with Redis, the API and the DLQ."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis

from core.config import Settings
from core.kafka_config import client_config
from dataflows.kafka.producer import RECORD_OF_ALIAS
from dataflows.runtime.deadletters import read_dead_letters
from loadtest.truth.logread import AvroReader, read_topics
from loadtest.truth.oracle import Expected, Oracle
from projection.codec import from_hash
from projection.keys import keyspace_of

Source = tuple[str, int, int]  # topic, partition, offset


@dataclass
class LogTruth:
    """What the input log says should have happened."""

    expected: dict[str, Expected]
    invalid: set[Source]
    log_records: int
    valid_records: int
    applied: int
    duplicates: int


@dataclass
class Verdict:
    expected: LogTruth
    log_records: int = 0
    valid_records: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    dead_letters_resent: int = 0
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)
    dead_letters_missing: list[Source] = field(default_factory=list)
    dead_letters_unexpected: list[Source] = field(default_factory=list)
    keys: int = 0
    lost: int = 0
    double_counted: int = 0
    redis_mismatches: list[dict[str, Any]] = field(default_factory=list)
    http_keys: int = 0
    http_mismatches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        return not (self.redis_mismatches or self.http_mismatches or self.dead_letters_missing
                    or self.dead_letters_unexpected)


def read_truth(settings: Settings, until_ms: int | None = None, formula: int = 1) -> LogTruth:
    """The oracle's positions for the whole log or, with ``until_ms``, for each partition's records
    before the first one logged at or after it (what a point-in-time replay must equal)."""
    reader = AvroReader()
    oracle = Oracle(formula=formula)
    closed: set[tuple[str, int]] = set()
    alias_of_topic = {settings.topic_alias(a): a for a in RECORD_OF_ALIAS}
    invalid: set[Source] = set()
    n = 0
    order = {t: i for i, t in enumerate(settings.input_topics)}
    log = sorted(read_topics(client_config(settings), list(settings.input_topics)),
                 key=lambda m: (order[m.topic], m.partition, m.offset))  # topic/partition/offset order
    for m in log:
        if until_ms is not None and ((m.topic, m.partition) in closed or m.timestamp_ms >= until_ms):
            closed.add((m.topic, m.partition))
            continue
        n += 1
        where = (m.topic, m.partition, m.offset)
        try:
            name, record = reader.read(m.value)
        except ValueError:
            invalid.add(where)
            continue
        alias = alias_of_topic[m.topic]
        if RECORD_OF_ALIAS[alias] != name:
            invalid.add(where)
            continue
        key = m.key.decode("utf-8", "replace") if m.key is not None else None
        if key is None or oracle.feed(alias, record, key) is not None:
            invalid.add(where)
    return LogTruth(oracle.positions(), invalid, n, n - len(invalid), oracle.accepted, oracle.duplicates)


def verify(settings: Settings, log: Callable[[str], None], truth: LogTruth | None = None) -> Verdict:
    if truth is None:
        truth = read_truth(settings)
        log(f"oracle: {truth.log_records:,} records in the log, {truth.applied:,} distinct events, "
            f"{truth.duplicates:,} duplicates, {len(truth.invalid):,} invalid, {len(truth.expected):,} keys")
    v = Verdict(truth, truth.log_records, truth.valid_records, truth.applied, truth.duplicates)
    _check_dead_letters(settings, truth, v)
    check_redis_positions(settings, truth, v)
    if not v.redis_mismatches:
        _check_http(settings, truth, v)
    log(f"compared: {v.keys:,} keys in Redis ({len(v.redis_mismatches)} differ), {v.http_keys:,} over HTTP "
        f"({len(v.http_mismatches)} differ), {v.dead_lettered:,} dead letters "
        f"({len(v.dead_letters_missing)} missing, {len(v.dead_letters_unexpected)} unexpected)")
    return v


def _check_dead_letters(settings: Settings, truth: LogTruth, v: Verdict) -> None:
    entries = read_dead_letters(settings).values()
    sources = {_source(e.source) for e in entries}
    v.dead_lettered = len(sources)
    v.dead_letters_resent = sum(e.copies - 1 for e in entries)
    v.dead_letter_reasons = Counter(e.reason for e in entries)
    v.dead_letters_missing = sorted(truth.invalid - sources)
    v.dead_letters_unexpected = sorted(sources - truth.invalid)


def _source(text: str) -> Source:
    topic, partition, offset = text.rsplit(":", 2)
    return topic, int(partition), int(offset)


def check_redis_positions(settings: Settings, truth: LogTruth, v: Verdict) -> None:
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=30)
    prefix = f"{keyspace_of(settings).prefix}:pos:"
    stored: dict[str, dict[str, Any]] = {}
    keys = list(client.scan_iter(match=prefix + "*", count=5000))
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.hgetall(k)
    for raw in pipe.execute():
        rec = from_hash(raw)
        if rec:
            stored[f"{rec['sku']}@{rec['location']}"] = {f: rec[f] for f in _FIELDS if f in rec}
    client.close()
    v.keys = len(stored)
    for key in set(truth.expected) | set(stored):
        exp = truth.expected[key].fields() if key in truth.expected else None
        got = stored.get(key)
        if exp is not None and got is not None and got == exp:
            continue
        ev, gv = (exp or {}).get("version", 0), (got or {}).get("version", 0)
        v.lost += max(0, ev - gv)
        v.double_counted += max(0, gv - ev)
        v.redis_mismatches.append({"key": key, "expected": exp, "stored": got})


_FIELDS = ("available_qty", "non_sellable", "on_hand", "reserved", "inbound", "safety_stock", "atp", "shortfall",
           "version", "as_of", "formula_version", "demand_per_min_5m", "demand_per_min_60m", "stockout_eta_minutes")


def _check_http(settings: Settings, truth: LogTruth, v: Verdict) -> None:
    by_sku: dict[str, dict[str, Expected]] = {}
    for e in truth.expected.values():
        by_sku.setdefault(e.sku, {})[e.location] = e
    base = f"http://{settings.api_host}:{settings.api_port}/v1/availability/"
    with httpx.Client(timeout=10.0) as client:
        for sku, locations in by_sku.items():
            r = client.get(base + sku)
            served = {p["location"]: p for p in r.json()["locations"]} if r.status_code == 200 else {}
            for loc, e in locations.items():
                v.http_keys += 1
                got = served.get(loc)
                exp = e.fields()
                if got is None or any(got.get(f) != exp[f] for f in _HTTP_FIELDS):
                    v.http_mismatches.append({"key": f"{sku}@{loc}", "status": r.status_code, "expected": exp,
                                              "served": {f: got.get(f) for f in _HTTP_FIELDS} if got else None})


_HTTP_FIELDS = ("available_qty", "non_sellable", "on_hand", "reserved", "inbound", "safety_stock", "atp",
                "shortfall", "version", "formula_version", "demand_per_min_5m", "demand_per_min_60m",
                "stockout_eta_minutes")
