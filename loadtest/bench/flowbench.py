"""The dataflow's own per-record cost, without a broker or Redis: the production flow on Bytewax's
TestingSource and TestingSink, fed pre-encoded simulator records.

What it measures is the Python path of a record (decode, the checks, the fold and its guard, the
output encoding, Bytewax's runtime), so two commits can be compared on one machine in one sitting.
It runs with the collector thresholds of ``atp run`` (``core.gctune``) and prints one JSON line: the median and every run's records per second of CPU time.

    python -m loadtest.bench.flowbench --events 100000 --runs 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.testing import TestingSink, TestingSource, run_main

from core import gctune
from core.config import load_settings
from dataflows.flow import FlowIO, build_flow, deps_from_settings
from dataflows.kafka.producer import RECORD_OF_ALIAS
from sandbox.simulator import Simulator
from schemas import Encoder, default_store
from state.events import kafka_key


def messages(events: int, seed: int) -> list[KafkaSourceMessage]:
    settings = load_settings({})
    enc = Encoder(default_store())
    sim = Simulator(seed=seed, skus=2000, locations=4)
    start = int(time.time() * 1000) - events  # one event a millisecond, ending now: all in the clock's range
    out = []
    for i in range(events):
        alias, rec = sim.next(start + i)
        out.append(KafkaSourceMessage(
            key=kafka_key(rec.get("sku"), rec["location"]).encode(), value=enc.encode(RECORD_OF_ALIAS[alias], rec),
            topic=settings.topic_alias(alias), partition=0, offset=i))
    return out


def one_run(msgs: list[KafkaSourceMessage]) -> float:
    settings = load_settings({})
    flow = build_flow(FlowIO(TestingSource(msgs, batch_size=1000), TestingSink([]), TestingSink([])),
                      deps_from_settings(settings))
    started = time.process_time()
    run_main(flow)
    return len(msgs) / (time.process_time() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    gctune.tune()  # the collector thresholds `atp run` uses
    msgs = messages(args.events, args.seed)
    rates = [one_run(msgs) for _ in range(args.runs)]
    print(json.dumps({"events": args.events, "runs": args.runs, "median_records_per_cpu_s": round(statistics.median(rates)),
                      "rates": [round(r) for r in rates]}))


if __name__ == "__main__":
    main()
