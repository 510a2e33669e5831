"""One rung of the benchmark ladder, run in its own process: ``python -m loadtest.ladder_stage STAGE ENDS``.

Every rung reads the same pre-produced input (the input topics up to ``ENDS``, a JSON file of
``{index}-{topic}`` -> end offset) and adds one piece of the production pipeline to the rung
below it. Settings come from the ``ATP_*`` environment. Prints ``{"records": N, "seconds": S}``.

- ``consume``: confluent-kafka ``consume()`` on every partition, nothing else;
- ``decode``:  + Avro decode of every value;
- ``bytewax``: a Bytewax dataflow from the bounded Kafka source to a counting sink;
- ``fold``:    + decode, validation and the ATP fold (the production steps), positions dropped;
- ``publish``: + the Redis projection and the Kafka outputs, recovery off;
- ``full``:    + recovery (the default deployment).
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.recovery import RecoveryConfig
from bytewax.run import cli_main
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from atp.config import Settings, load_settings
from dataflows import kafka_io
from loadtest.bench import own_peak_rss_mib
from dataflows.flow import FlowIO, build_flow, deps_from_settings
from dataflows.recovery import RecoveryStore
from dataflows.redis_sink import RedisPositionSink
from schemas import Decoder, default_store

STAGES = ("consume", "decode", "bytewax", "fold", "publish", "full")
STARTS_ENV = "LADDER_STARTS_FILE"  # optional: JSON of the first offset to read per partition (default 0)
COUNT = [0]


class _Count(DynamicSink[Any]):
    def build(self, step_id: str, worker_index: int, worker_count: int) -> "_CountPart":
        return _CountPart()


class _CountPart(StatelessSinkPartition[Any]):
    def write_batch(self, items: list[Any]) -> None:
        COUNT[0] += len(items)


def _consume(settings: Settings, ends: dict[str, int], decode: bool) -> int:
    decoder = Decoder(default_store())
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "atp-ladder",
                         "enable.auto.commit": False, "fetch.max.bytes": 52428800})
    parts = {}
    for key, end in ends.items():
        index, topic = key.split("-", 1)
        if end > 0:
            parts[(topic, int(index))] = end
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in parts])
    n = 0
    open_parts = set(parts)
    while open_parts:
        for m in consumer.consume(10_000, 0.05):
            if m.error() is not None:
                continue
            if decode:
                decoder.decode(m.value())
            n += 1
            if m.offset() + 1 >= parts[(m.topic(), m.partition())]:
                open_parts.discard((m.topic(), m.partition()))
    consumer.close()
    return n


def _flow(settings: Settings, ends: dict[str, int], stage: str) -> Dataflow:
    starts_file = os.environ.get(STARTS_ENV)
    starts = json.loads(Path(starts_file).read_text()) if starts_file else {}
    source = kafka_io.source(settings, bounds=kafka_io.Bounds(ends, starts))
    if stage == "bytewax":
        flow = Dataflow("atp")
        op.output("out", op.input("kafka_in", flow, source), _Count())
        return flow
    if stage == "fold":
        io = FlowIO(source, _Count(), _Count())
    else:
        io = FlowIO(source, RedisPositionSink(settings.redis_url, settings.keyspace, cluster=settings.redis_cluster),
                    kafka_io.sink(settings))
    return build_flow(io, deps_from_settings(settings))


def run(stage: str, ends: dict[str, int], settings: Settings) -> int:
    if stage in ("consume", "decode"):
        return _consume(settings, ends, stage == "decode")
    recovery = None
    if stage == "full":
        RecoveryStore(settings.recovery_dir).create(settings.workers)
        recovery = RecoveryConfig(str(settings.recovery_dir), backup_interval=timedelta(0))
    if stage in ("publish", "full"):
        import redis

        from atp.generations import write_meta
        from state.projection import READY

        write_meta(redis.Redis.from_url(settings.redis_url), settings.keyspace, "ladder", READY)
    cli_main(_flow(settings, ends, stage), workers_per_process=settings.workers,
             epoch_interval=timedelta(seconds=settings.snapshot_interval_s), recovery_config=recovery)
    if stage == "bytewax":
        return COUNT[0]
    return _consumed()  # what the decode step saw, so a rung that stopped early shows


def _consumed() -> int:
    from dataflows import metrics

    return sum(int(s.value) for m in metrics.INPUT_OFFSET.collect() for s in m.samples)


def main() -> None:
    stage, ends_file = sys.argv[1], Path(sys.argv[2])
    if stage not in STAGES:
        raise SystemExit(f"stage must be one of {', '.join(STAGES)}")
    ends = json.loads(ends_file.read_text())
    settings = load_settings()
    started = time.perf_counter()
    records = run(stage, ends, settings)
    seconds = time.perf_counter() - started
    print(json.dumps({"stage": stage, "records": records, "seconds": seconds, "counted": COUNT[0],
                      "peak_rss_mib": own_peak_rss_mib()}))


if __name__ == "__main__":
    main()
