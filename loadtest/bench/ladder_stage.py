"""One rung of the benchmark ladder, run in its own process:
``python -m loadtest.bench.ladder_stage STAGE ENDS [STARTS]``.

Every rung reads the same pre-produced input (the input topics up to ``ENDS``, a JSON file of
``{index}-{topic}`` -> end offset; from ``STARTS``, the same shape, else from the beginning) and adds one piece of the production pipeline to the rung
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
import resource
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.recovery import RecoveryConfig
from bytewax.run import cli_main

from core.config import Settings
from core.procinfo import own_peak_rss_mib
from dataflows import kafka
from dataflows.flow import FlowIO, build_flow, deps_from_settings
from dataflows.kafka import admin as kafka_admin
from dataflows.kafka import output as kafka_output
from dataflows.kafka import source as kafka_source
from dataflows.kafka.progress import STOCK_PROGRESS
from dataflows.redis_sink import RedisPositionSink
from dataflows.runtime.recovery import RecoveryStore
from loadtest.bench.peer_logic import read_input, start_process
from projection.keys import keyspace_of
from schemas import Decoder, default_store

STAGES = ("consume", "decode", "bytewax", "fold", "publish", "full")
COUNT = [0]
INPUT_READ_PEAK: list[float] = []  # the peak RSS each time a partition's range was read


class _EndMarked(FixedPartitionedSource[Any, Any]):
    """The bounded source, noting the peak RSS as each partition's range is read.

    When the last one is, the input was read and Bytewax has not yet seen its end. At the end of
    input Bytewax calls ``on_eof`` on every key and snapshots every key at once, which a live
    dataflow never does (it stops on SIGINT or SIGTERM, without an end of input): the memory
    benchmark reports the peak before that and the peak over the whole run."""

    def __init__(self, inner: FixedPartitionedSource[Any, Any]) -> None:
        self._inner = inner

    def list_parts(self) -> list[str]:
        return self._inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _EndMark:
        return _EndMark(self._inner.build_part(step_id, for_part, resume_state))


class _EndMark(StatefulSourcePartition[Any, Any]):
    def __init__(self, inner: StatefulSourcePartition[Any, Any]) -> None:
        self._inner = inner

    def next_batch(self) -> Any:
        try:
            return self._inner.next_batch()
        except StopIteration:
            INPUT_READ_PEAK.append(own_peak_rss_mib())
            raise

    def next_awake(self) -> Any:
        return self._inner.next_awake()

    def snapshot(self) -> Any:
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()


class _Count(DynamicSink[Any]):
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CountPart:
        return _CountPart()


class _CountPart(StatelessSinkPartition[Any]):
    def write_batch(self, items: list[Any]) -> None:
        COUNT[0] += len(items)


def _consume(settings: Settings, ends: dict[str, int], decode: bool) -> int:
    decoder = Decoder(default_store())
    n = 0
    for m in read_input(settings, ends, "atp-ladder"):
        if decode:
            decoder.decode(m.value())
        n += 1
    return n


def _flow(settings: Settings, bounds: kafka.Bounds, stage: str) -> Dataflow:
    source = _EndMarked(kafka_source.source(settings, bounds=bounds))
    if stage == "bytewax":
        flow = Dataflow("atp")
        op.output("out", op.input("kafka_in", flow, source), _Count())
        return flow
    if stage == "fold":
        io = FlowIO(source, _Count(), _Count())
    else:
        io = FlowIO(source, RedisPositionSink(settings.redis_url, keyspace_of(settings), cluster=settings.redis_cluster),
                    kafka_output.sink(settings))
    return build_flow(io, deps_from_settings(settings))


def run(stage: str, bounds: kafka.Bounds, settings: Settings) -> int:
    if stage in ("consume", "decode"):
        return _consume(settings, dict(bounds.ends), stage == "decode")
    recovery = None
    if stage == "full":
        # In cluster mode (loadtest.bench.cluster) process 0 holds every partition, as `atp run` does.
        if settings.coordinator:
            RecoveryStore(settings.recovery_dir).create(settings.workers_total)
        settings.recovery_dir.mkdir(parents=True, exist_ok=True)
        recovery = RecoveryConfig(str(settings.recovery_dir), backup_interval=timedelta(0))
    if stage in ("publish", "full") and settings.coordinator:
        import redis

        from projection.generations import write_meta
        from projection.keys import READY

        write_meta(redis.Redis.from_url(settings.redis_url), keyspace_of(settings), "ladder", READY)
    # As `atp run` does: the read progress counts once every wms partition was read.
    STOCK_PROGRESS.reset(kafka_admin.check_kafka(settings)[settings.topic_wms])
    cli_main(_flow(settings, bounds, stage), workers_per_process=settings.workers, process_id=settings.process_id,
             addresses=settings.addresses, epoch_interval=timedelta(seconds=settings.snapshot_interval_s),
             recovery_config=recovery)
    if stage == "bytewax":
        return COUNT[0]
    # What the decode step saw (next offsets, less the starts), so a rung that stopped early shows.
    # In cluster mode each process counts its own partitions.
    return _consumed() - sum(bounds.starts.values())


def _consumed() -> int:
    from dataflows import metrics

    return sum(int(s.value) for m in metrics.INPUT_OFFSET.collect() for s in m.samples)


def main() -> None:
    stage, ends_file = sys.argv[1], Path(sys.argv[2])
    if stage not in STAGES:
        raise SystemExit(f"stage must be one of {', '.join(STAGES)}")
    starts = json.loads(Path(sys.argv[3]).read_text()) if len(sys.argv) > 3 else {}
    bounds = kafka.Bounds(json.loads(ends_file.read_text()), starts)
    settings = start_process()
    started = time.perf_counter()
    records = run(stage, bounds, settings)
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"stage": stage, "records": records, "seconds": seconds, "counted": COUNT[0],
                      "cpu_s": usage.ru_utime + usage.ru_stime,
                      "peak_rss_mib": own_peak_rss_mib(),
                      "input_read_peak_rss_mib": max(INPUT_READ_PEAK, default=None)}))


if __name__ == "__main__":
    main()
