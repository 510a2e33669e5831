"""Replay throughput: how long `atp replay` takes to rebuild N events into a new generation.

Starts a private stack, produces a seeded input once, then runs `atp replay` as a child process
``--runs`` times (each into its own generation, dropped afterwards), timing each from spawn to
exit, with the peak RSS it reports (its own VmHWM). The first build is checked against the oracle and every later one
against the first, so a fast wrong answer does not count. Writes ``loadtest/reports/replay.{json,md}``.

    python -m loadtest.bench.replay --events 1000000
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from core.config import Settings, child_environ
from dataflows.kafka import admin as kafka_admin
from loadtest.common.harness import measure, parser, private_stack, produce, write_report
from loadtest.common.machine import machine
from loadtest.truth.verify import Verdict, check_redis_positions, read_truth
from projection.generations import drop, for_generation
from projection.keys import generations_of
from projection.verify import compare

_SUMMARY = re.compile(r"replayed ([\d,]+) records .* in ([\d.]+) s: ([\d,]+) rec/s, ([\d,]+) keys, "
                      r"peak RSS ([\d,]+) MiB")


def _one(settings: Settings, name: str, log_dir: Path) -> dict[str, Any]:
    m = measure(["atp", "replay", name, "--metrics-port", "0"], child_environ(settings, os.environ), log_dir, name)
    found = _SUMMARY.search(m.stdout)
    if m.exit_code != 0 or found is None:
        raise RuntimeError(f"replay {name} failed (exit {m.exit_code}):\n{m.stdout[-2000:]}{m.stderr[-3000:]}")
    records, inner_s, _, keys, rss = (float(g.replace(",", "")) for g in found.groups())
    return {"generation": name, "records": int(records), "keys": int(keys), "wall_s": round(m.wall_s, 2),
            "replay_s": inner_s, "records_per_s_wall": round(records / m.wall_s),
            "peak_rss_mib": rss}  # its own VmHWM (see core.procinfo)


def run(events: int, runs: int, skus: int, locations: int, seed: int, work_dir: Path) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    with private_stack(work_dir, redis_key_prefix="bench") as (settings, _):
        sent = produce(settings, events, skus, locations, seed)
        partitions = sum(kafka_admin.check_kafka(settings).values())
        client = redis.Redis.from_url(settings.redis_url)
        first = None
        for i in range(runs):
            name = f"bench-{i + 1}"
            r = _one(settings, name, work_dir)
            print(f"run {i + 1}: {r}", file=sys.stderr)
            if first is None:  # the oracle checks the first build; every later one must equal it
                truth = read_truth(settings)
                verdict = Verdict(truth)
                check_redis_positions(for_generation(settings, name), truth, verdict)
                r["oracle_mismatches"] = len(verdict.redis_mismatches)
                first = name
            else:
                diff = compare(client, generations_of(settings).keyspace(name), generations_of(settings).keyspace(first))
                r["differs_from_first"] = 0 if diff.passed else len(diff.different) + len(diff.version_apart)
                drop(settings, client, name)
            results.append(r)
    walls = [r["wall_s"] for r in results]
    return {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
        "input": {"events": sent.sent, "skus": skus, "locations": locations, "seed": seed,
                  "partitions": partitions},
        "runs": results,
        "median_wall_s": statistics.median(walls),
        "median_records_per_s": round(statistics.median(r["records_per_s_wall"] for r in results)),
        "reproduce": f"python -m loadtest.bench.replay --events {events} --runs {runs} --skus {skus} "
                     f"--locations {locations} --seed {seed}",
    }


def markdown(r: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {x['generation']} | {x['records']:,} | {x['keys']:,} | {x['wall_s']:.1f} | {x['records_per_s_wall']:,} | "
        f"{x['peak_rss_mib']:.0f} | {x.get('oracle_mismatches', x.get('differs_from_first'))} |"
        for x in r["runs"])
    i = r["input"]
    return f"""# Replay throughput

Finished {r['finished_at']}, {r['machine']['cpus']} CPUs, Python {r['machine']['python']}, embedded broker and
Redis on loopback. Input: {i['events']:,} simulated events ({i['skus']:,} SKUs × {i['locations']} locations,
seed {i['seed']}, {i['partitions']} input partitions), rebuilt by `atp replay` (1 worker, recovery on)
into a new generation, timed from process start to exit.

**Median: {r['median_wall_s']:.1f} s to rebuild, {r['median_records_per_s']:,} records/s.**

| generation | records | keys | wall s | records/s | peak RSS MiB | wrong keys (run 1: vs oracle; later: vs run 1) |
|---|---|---|---|---|---|---|
{rows}

Reproduce: `{r['reproduce']}`
"""


def main() -> None:
    a = parser(__doc__ or "").parse_args()
    with tempfile.TemporaryDirectory(prefix="atp-replay-bench-") as tmp:
        report = run(a.events, a.runs, a.skus, a.locations, a.seed, Path(tmp))
    print(write_report(a.report_dir, "replay", report, markdown))


if __name__ == "__main__":
    main()
