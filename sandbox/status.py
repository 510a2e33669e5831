"""What runs and how it is doing, for any deployment's settings: `atp status` and `atp stack status`.

Each check has a few seconds at most (``CHECK_S``) and they run in parallel threads, so a report
with every service down still comes back within seconds:

- Kafka: the cluster's metadata, and whether every topic exists;
- Redis: a ping; then the keyspace the API serves (the current generation, its meta's ``state``);
- the dataflow: its heartbeat in that meta (judged as the API's /readyz judges it), and its metrics
  endpoint when it answers;
- the API: ``GET /healthz`` and ``GET /readyz`` on ATP_API_HOST:ATP_API_PORT;
- consumer lag per input topic: the end offsets minus what the dataflow has consumed, taken from
  its metrics endpoint (``atp_input_offset``, live and exact) and, for a partition the metrics do
  not name (a process restarted since it last read there, or the dataflow is down), from the
  recovery store in ATP_STATE_DIR (the offsets of its last snapshot, at most a snapshot interval
  behind). A partition neither names is unknown, never guessed;
- the last event's age: ``atp_last_event_timestamp_seconds``, else the newest position's ``as_of``;
- dead letters whose log timestamp is within the last hour: counted from the broker's time index
  (``offsets_for_times``), or by reading the dead-letter topic when the broker has no usable index.

Addresses are shown with their passwords redacted (``core.redact``).
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from typing import Any

import httpx

from core import redact
from core.config import Settings
from core.errors import AtpError
from sandbox.status_report import (
    Lag,
    Meta,
    Report,
    api_line,
    api_url,
    consumed_offsets,
    dataflow_line,
    dead_letters_line,
    kafka_line,
    lag_line,
    lag_per_topic,
    last_event_line,
    metrics_url,
    redis_lines,
)

CHECK_S = 3.0  # the longest one check waits for an answer
HOUR_MS = 3_600_000


def _why(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, AtpError) else f"{type(exc).__name__}: {exc}"
    return redact.text(text)[:200]


# -- the checks (each returns what it found or raises; the caller turns errors into "down") ------

def kafka_metadata(settings: Settings) -> Any:
    from core.kafka_config import metadata

    return metadata(settings, CHECK_S)


def redis_meta(settings: Settings) -> tuple[str, dict[str, str] | None]:
    """The current generation's name and its meta (None: the keyspace is missing)."""
    from projection.client import connect
    from projection.generations import current, read_meta
    from projection.keys import generations_of

    client = connect(settings, socket_connect_timeout=CHECK_S, socket_timeout=CHECK_S)
    try:
        client.ping()
        gens = generations_of(settings)
        name = current(client, gens)
        return name, read_meta(client, gens.keyspace(name))
    finally:
        client.close()


def api_probe(settings: Settings) -> dict[str, Any]:
    # Only the public liveness routes, with no credentials: a certificate the status check cannot
    # verify (one the deployment's clients trust by their own CA) is not a reason to report it down.
    with httpx.Client(base_url=api_url(settings), timeout=CHECK_S, verify=False) as client:  # noqa: S501
        health = client.get("/healthz").status_code
        ready = client.get("/readyz")
    body: Any = None
    try:
        body = ready.json()
    except ValueError:
        pass
    error: dict[str, Any] = {}
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
    return {"healthz": health, "readyz": ready.status_code, "readyz_code": error.get("code"),
            "readyz_message": error.get("message")}


def metrics_samples(settings: Settings) -> dict[Any, float] | None:
    from sandbox.scrape import scrape

    url = metrics_url(settings)
    return scrape(url, CHECK_S) if url else None


def committed_offsets(settings: Settings) -> dict[str, int] | None:
    """The input offsets of the recovery store's last snapshot (None: no store here, or unreadable)."""
    from dataflows.runtime.recovery import RecoveryError, RecoveryStore

    store = RecoveryStore(settings.recovery_dir)
    try:
        return store.committed_offsets()[1] if store.exists() else None
    except RecoveryError:  # damaged, or busy past its timeout: `atp run` says which when it starts
        return None


def input_lag(settings: Settings, samples: dict[Any, float] | None, committed: dict[str, int] | None) -> Lag:
    from dataflows.kafka.admin import end_offsets

    ends = end_offsets(settings, CHECK_S)
    sources = [what for what, have in (("the dataflow's metrics", samples), ("the recovery store", committed)) if have]
    consumed = consumed_offsets(samples, committed)
    return Lag(lag_per_topic(list(settings.input_topics), ends, consumed), " and ".join(sources) or "nothing")


def dead_letters_since(settings: Settings, md: Any, since_ms: int) -> tuple[int, str]:
    """Dead letters with a log timestamp at or after ``since_ms``, and how they were counted."""
    from confluent_kafka import Consumer, TopicPartition

    from core.kafka_config import client_config
    from dataflows.kafka.topicread import offsets_at, read_topics

    topic = settings.topic_dead_letter
    conf = client_config(settings, {"log_level": 0})
    consumer = Consumer({**conf, "group.id": "atp-status", "enable.auto.commit": False})
    try:
        ends = {(topic, p): consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=CHECK_S)[1]
                for p in md.topics[topic].partitions}
    finally:
        consumer.close()
    cut = offsets_at(conf, ends, since_ms, CHECK_S)
    if cut is not None:
        return sum(end - cut[tp] for tp, end in ends.items()), "the broker's time index"
    count, deadline = 0, time.monotonic() + CHECK_S
    for m in read_topics(conf, [topic], timeout_s=CHECK_S):  # to each partition's real end
        count += m.timestamp_ms >= since_ms
        if time.monotonic() > deadline:  # the reader's consumer is closed as the generator goes
            raise TimeoutError(f"the dead-letter topic is too long to read within {CHECK_S:g} s "
                               "(and the broker's time index does not answer)")
    return count, "reading the dead-letter topic"


def newest_as_of(settings: Settings, generation: str, budget_s: float = CHECK_S) -> tuple[int | None, int, bool]:
    """The newest ``as_of`` of the generation's positions: (ms or None, positions read, all read)."""
    from projection.client import connect
    from projection.keys import generations_of

    ks = generations_of(settings).keyspace(generation)
    client = connect(settings, socket_connect_timeout=CHECK_S, socket_timeout=CHECK_S)
    newest, read, deadline = None, 0, time.monotonic() + budget_s
    try:
        keys: list[Any] = []
        for key in client.scan_iter(match=ks.position("*", "*"), count=1000):
            keys.append(key)
            if len(keys) >= 1000 or time.monotonic() > deadline:
                newest, read = _max_as_of(client, keys, newest), read + len(keys)
                keys = []
                if time.monotonic() > deadline:
                    return newest, read, False
        newest, read = _max_as_of(client, keys, newest), read + len(keys)
        return newest, read, True
    finally:
        client.close()


def _max_as_of(client: Any, keys: list[Any], newest: int | None) -> int | None:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hget(key, "as_of")
    for raw in pipe.execute():
        try:
            value = int(raw)
        except (TypeError, ValueError):
            continue
        newest = value if newest is None or value > newest else newest
    return newest


# -- putting it together -----------------------------------------------------------------------

def gather(settings: Settings, processes: dict[str, dict[str, Any]] | None = None) -> Report:
    """Run every check (in parallel, each bounded) and describe what was found."""
    now = datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    started = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=6, thread_name_prefix="atp-status")
    try:
        jobs: dict[str, Future[Any]] = {
            "kafka": pool.submit(kafka_metadata, settings), "redis": pool.submit(redis_meta, settings),
            "api": pool.submit(api_probe, settings), "metrics": pool.submit(metrics_samples, settings),
            "recovery": pool.submit(committed_offsets, settings)}
        md, kafka_error = _result(jobs["kafka"], started + 2 * CHECK_S)
        found: dict[str, tuple[Any, str | None]] = {}
        if md is None:
            found["lag"] = found["dead letters"] = (None, "Kafka is not reachable")
        else:
            missing = [t for t in settings.input_topics if t not in md.topics]
            if missing:
                found["lag"] = (None, f"input topic(s) missing: {', '.join(missing)}")
            else:
                jobs["lag"] = pool.submit(lambda: input_lag(
                    settings, _result(jobs["metrics"], started + 2 * CHECK_S)[0],
                    _result(jobs["recovery"], started + 2 * CHECK_S)[0]))
            if settings.topic_dead_letter not in md.topics:
                found["dead letters"] = (None, f"topic {settings.topic_dead_letter} is missing")
            else:
                jobs["dead letters"] = pool.submit(dead_letters_since, settings, md, now_ms - HOUR_MS)
        deadline = started + 4 * CHECK_S  # one for every check together: they ran side by side
        found.update({name: _result(job, deadline) for name, job in jobs.items() if name != "kafka"})
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    meta, redis_error = found["redis"]
    samples, metrics_error = found["metrics"]
    return Report(now, [
        kafka_line(settings, md, kafka_error), *redis_lines(settings, meta, redis_error),
        dataflow_line(settings, meta, samples, metrics_error, now_ms), api_line(settings, *found["api"]),
        lag_line(found["lag"]), last_event_line(now_ms, *last_event(settings, samples, meta)),
        dead_letters_line(found["dead letters"])], processes)


def _result(job: Future[Any], deadline: float) -> tuple[Any, str | None]:
    """What the check found, or (None, why not) when it failed or did not answer by ``deadline``."""
    try:
        return job.result(timeout=max(0.0, deadline - time.monotonic())), None
    except FutureTimeout:
        return None, "no answer in the time allowed"
    except Exception as exc:  # noqa: BLE001 - every failure of a check is what the report says
        return None, _why(exc)


def last_event(settings: Settings, samples: dict[Any, float] | None,
               meta: Meta | None) -> tuple[float | None, str, str | None]:
    """The newest event time (ms), where it comes from, and why it is not known (if so)."""
    seconds = max((v for (n, _), v in (samples or {}).items() if n == "atp_last_event_timestamp_seconds"), default=0)
    if seconds > 0:
        return seconds * 1000, "the dataflow's metrics", None
    if meta is None:
        return None, "", "no metrics, and Redis is not reachable"
    try:
        newest, read, complete = newest_as_of(settings, meta[0])
    except Exception as exc:  # noqa: BLE001 - reported, never raised
        return None, "", _why(exc)
    return newest, f"the newest as_of of {read} position(s)" + ("" if complete else " read in the time allowed"), None
