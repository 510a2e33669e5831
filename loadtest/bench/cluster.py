"""Cluster mode, measured: the full pipeline (recovery on) as one process and as a Bytewax cluster.

One pre-produced input; then, ``--runs`` times interleaved, each layout reads all of it:

- ``1x1``: one process, one worker (the default deployment);
- ``1x2``: one process, two worker threads;
- ``2x1``: two processes of one worker each (``ATP_CLUSTER_ADDRESSES``/``ATP_PROCESS_ID``; the
  second has a state directory of its own, as on another machine).

The input topics have a partition count that every layout's worker total divides (Bytewax stalls
when workers own uneven partition counts, upstream #556). Each run writes its own Redis keyspace,
compared key by key with the independent oracle: a layout that computes other positions gets no
figure. Writes ``loadtest/reports/cluster.{json,md,png}``.

    python -m loadtest.bench.cluster --events 200000
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.config import Settings, child_environ
from loadtest.common.harness import (
    bar_chart,
    measure_together,
    parser,
    private_stack,
    produce,
    write_ends,
    write_report,
)
from loadtest.common.machine import machine
from loadtest.truth.verify import LogTruth, Verdict, check_redis_positions, read_truth
from sandbox.stack import free_port

LAYOUTS = {"1x1": (1, 1), "1x2": (1, 2), "2x1": (2, 1)}  # processes, workers per process
LABELS = {"1x1": "1 process x 1 worker", "1x2": "1 process x 2 workers", "2x1": "2 processes x 1 worker (cluster)"}


def _settings(base: Settings, layout: str, i: int, process: int) -> Settings:
    processes, workers = LAYOUTS[layout]
    update: dict[str, Any] = {"state_dir": base.state_dir / f"{layout}-{i}" / f"p{process}",
                              "redis_key_prefix": f"cl-{layout}-{i}", "workers": workers}
    return base.model_copy(update=update)


def _run(layout: str, base: Settings, ends_file: Path, truth: LogTruth, i: int, log_dir: Path) -> dict[str, Any]:
    processes, _ = LAYOUTS[layout]
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes)) if processes > 1 else None
    runs = []
    for p in range(processes):
        s = _settings(base, layout, i, p)
        s.state_dir.mkdir(parents=True, exist_ok=True)
        env = child_environ(s, os.environ)
        if addresses:
            env.update(ATP_CLUSTER_ADDRESSES=addresses, ATP_PROCESS_ID=str(p))
        runs.append((["loadtest.bench.ladder_stage", "full", str(ends_file)], env, f"{layout}-{i}-p{p}"))
    measured = measure_together(runs, log_dir)
    failed = next((m for m in measured if m.exit_code != 0), None)
    if failed is not None:
        raise RuntimeError(f"layout {layout} failed:\n{failed.stderr[-3000:]}")
    outs = [json.loads(m.stdout.strip().splitlines()[-1]) for m in measured]
    cpu, wall = sum(m.cpu_s for m in measured), max(m.wall_s for m in measured)
    records = sum(o["records"] for o in outs)
    seconds = max(o["seconds"] for o in outs)
    v = Verdict(truth)
    check_redis_positions(_settings(base, layout, i, 0), truth, v)
    ok = not v.redis_mismatches and records == truth.log_records
    rate = round(records / seconds) if seconds > 0 else 0
    return {"layout": layout, "records": records, "per_process_records": [o["records"] for o in outs],
            "seconds": round(seconds, 3), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "records_per_s": rate if ok else None, "measured_records_per_s": rate,
            "peak_rss_mib": [o["peak_rss_mib"] for o in outs], "keys": v.keys,
            "mismatched_keys": len(v.redis_mismatches), "matches_oracle": ok,
            "first_mismatch": v.redis_mismatches[0] if v.redis_mismatches else None}


def run(events: int, runs: int, skus: int, locations: int, seed: int, work_dir: Path, partitions: int) -> dict[str, Any]:
    samples: dict[str, list[dict[str, Any]]] = {k: [] for k in LAYOUTS}
    with private_stack(work_dir, topic_partitions=partitions) as (settings, _stack):
        sent = produce(settings, events, skus, locations, seed)
        ends, ends_file = write_ends(settings, work_dir)
        truth = read_truth(settings)
        print(f"oracle: {len(truth.expected):,} keys from {truth.log_records:,} records", file=sys.stderr)
        for i in range(runs):
            for layout in LAYOUTS:
                r = _run(layout, settings, ends_file, truth, i, work_dir)
                samples[layout].append(r)
                print(f"run {i + 1} {layout} {r['measured_records_per_s']:>9,} rec/s  cpu {r['cpu_s']:.1f} s  "
                      f"per process {r['per_process_records']}  oracle "
                      f"{'equal' if r['matches_oracle'] else 'DIFFERENT'}", file=sys.stderr)
    rows = []
    for layout, rs in samples.items():
        valid = all(r["matches_oracle"] for r in rs)
        rows.append({"layout": layout, "label": LABELS[layout], "matches_oracle": valid,
                     "median_records_per_s": round(statistics.median(r["measured_records_per_s"] for r in rs))
                     if valid else None,
                     "median_seconds": statistics.median(r["seconds"] for r in rs),
                     "median_cpu_s": statistics.median(r["cpu_s"] for r in rs), "runs": rs})
    rate = {r["layout"]: r["median_records_per_s"] for r in rows}
    ratios = {f"{k}_vs_1x1": round(rate[k] / rate["1x1"], 2) for k in ("1x2", "2x1") if rate.get(k) and rate.get("1x1")}
    return {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
        "input": {"events": sent.sent, "records": sum(ends.values()), "keys": len(truth.expected), "skus": skus,
                  "locations": locations, "seed": seed, "partitions": len(ends)},
        "runs": runs, "layouts": rows, "ratios": ratios,
        "reproduce": f"python -m loadtest.bench.cluster --events {events} --runs {runs} --skus {skus} "
                     f"--locations {locations} --seed {seed} --partitions {partitions}",
    }


def markdown(r: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {x['label']} | {x['median_records_per_s'] if x['median_records_per_s'] is not None else 'void'} | "
        f"{x['median_seconds']:.1f} | {x['median_cpu_s']:.1f} | {'equal' if x['matches_oracle'] else '**different**'} |"
        for x in r["layouts"])
    ratios = "\n".join(f"- {k.replace('_vs_', ' against ')}: **{v}×**" for k, v in r["ratios"].items())
    i = r["input"]
    split: list[int] = next((x["runs"][0]["per_process_records"] for x in r["layouts"] if x["layout"] == "2x1"), [])
    return f"""# Cluster mode: one process against two

Finished {r['finished_at']}, {r['machine']['cpus']} CPUs, Python {r['machine']['python']}; embedded broker and
Redis on loopback, on the same CPUs as the dataflow. Input: {i['events']:,} simulated events ({i['records']:,}
records, {i['keys']:,} keys, {i['partitions']} input partitions), pre-produced once. The full pipeline
(recovery on) reads all of it in each layout, {r['runs']} runs interleaved; medians below. Records/s
counts from start-up to the last write of the slowest process. CPU is the sum over the processes.
Every run was compared key by key with the independent oracle.

| layout | records/s | seconds | CPU s | positions vs oracle |
|---|---|---|---|---|
{rows}

Ratios (medians):
{ratios}

Records read by each process of the cluster: {', '.join(f'{n:,}' for n in split)} (Bytewax assigns the input
partitions to workers itself; the slowest process sets the pace).

![records per second per layout](cluster.png)

Reproduce: `{r['reproduce']}`
"""


def plot(r: dict[str, Any], path: Path) -> bool:
    rows = [x for x in r["layouts"] if x["median_records_per_s"]]
    return bar_chart(path, [x["label"] for x in rows], [x["median_records_per_s"] for x in rows],
                     "records per second (median), full pipeline, positions equal to the oracle",
                     f"Cluster mode: {r['input']['records']:,} records, {r['machine']['cpus']} CPUs", height=2.6)


def main() -> None:
    ap = parser(__doc__ or "")
    ap.add_argument("--partitions", type=int, default=4, help="partitions per input topic (4 topics)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="atp-cluster-") as tmp:
        report = run(a.events, a.runs, a.skus, a.locations, a.seed, Path(tmp), a.partitions)
    text = write_report(a.report_dir, "cluster", report, markdown)
    plot(report, a.report_dir / "cluster.png")
    print(text)


if __name__ == "__main__":
    main()
