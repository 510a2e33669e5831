"""The benchmark ladder: one pre-produced input, six rungs, each adding one piece of the pipeline.

Shows where the time goes and how close the full pipeline (recovery on, the default deployment)
comes to the machine's ceilings measured in the same run. Each rung runs in its own process
(``loadtest.bench.ladder_stage``), ``--runs`` times, interleaved so that drift on a shared machine spreads
over every rung; the report quotes medians, the ratios between rungs, and the CPU of the rung's
process and of the broker and Redis. Writes ``loadtest/reports/ladder.{json,md,png}``.

    python -m loadtest.bench.ladder --events 1000000
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
from loadtest.bench.ladder_stage import STAGES
from loadtest.common.harness import bar_chart, cpu_of, measure, parser, private_stack, produce, write_ends, write_report
from loadtest.common.machine import machine
from sandbox.stack import Stack

BROKERS = {"tansu": "the embedded broker (tansu)", "kafka": "a single-node Apache Kafka (KRaft)"}


def name_of(broker: str) -> str:
    """The report's name: ladder for tansu, ladder-kafka beside it."""
    return "ladder" if broker == "tansu" else f"ladder-{broker}"


LABELS = {
    "consume": "raw consume()", "decode": "+ Avro decode", "bytewax": "Bytewax pass-through",
    "fold": "+ decode and ATP fold", "publish": "+ Redis and Kafka outputs", "full": "+ recovery (default)",
}


def _stage(stage: str, settings: Settings, ends_file: Path, stack: Stack, i: int) -> dict[str, Any]:
    s = settings.model_copy(update={"state_dir": settings.state_dir / f"{stage}-{i}",
                                    "redis_key_prefix": f"ladder-{stage}-{i}"})
    before = {name: cpu_of(stack.pid(name)) for name in ("broker", "redis")}
    m = measure(["loadtest.bench.ladder_stage", stage, str(ends_file)], child_environ(s, os.environ),
                settings.state_dir, f"{stage}-{i}")
    if m.exit_code != 0:
        raise RuntimeError(f"stage {stage} failed:\n{m.stderr[-3000:]}")
    result = json.loads(m.stdout.strip().splitlines()[-1])
    return {
        "stage": stage, "records": result["records"], "seconds": round(result["seconds"], 3),
        "wall_s": round(m.wall_s, 3), "records_per_s": round(result["records"] / result["seconds"]),
        "cpu_s": round(m.cpu_s, 2),
        "broker_cpu_s": round(cpu_of(stack.pid("broker")) - before["broker"], 2),
        "redis_cpu_s": round(cpu_of(stack.pid("redis")) - before["redis"], 2),
        "peak_rss_mib": result["peak_rss_mib"],
    }


def run(events: int, runs: int, skus: int, locations: int, seed: int, work_dir: Path,
        stages: tuple[str, ...] = STAGES, broker: str = "tansu") -> dict[str, Any]:
    samples: dict[str, list[dict[str, Any]]] = {s: [] for s in stages}
    with private_stack(work_dir, stack_broker=broker) as (settings, stack):
        sent = produce(settings, events, skus, locations, seed)
        ends, ends_file = write_ends(settings, work_dir)
        for i in range(runs):
            for stage in stages:
                r = _stage(stage, settings, ends_file, stack, i)
                samples[stage].append(r)
                print(f"run {i + 1} {stage:8} {r['records_per_s']:>9,} rec/s  cpu {r['cpu_s']:.1f} s", file=sys.stderr)
    rungs = []
    for stage in stages:
        rs = samples[stage]
        rungs.append({
            "stage": stage, "label": LABELS[stage],
            "median_records_per_s": round(statistics.median(r["records_per_s"] for r in rs)),
            "median_cpu_s": statistics.median(r["cpu_s"] for r in rs),
            "median_broker_cpu_s": statistics.median(r["broker_cpu_s"] for r in rs),
            "median_redis_cpu_s": statistics.median(r["redis_cpu_s"] for r in rs),
            "median_peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in rs),
            "runs": rs,
        })
    rate = {r["stage"]: r["median_records_per_s"] for r in rungs}
    ratios = {}
    if "full" in rate and "bytewax" in rate:
        ratios["full_vs_bytewax_passthrough"] = round(rate["full"] / rate["bytewax"], 3)
    if "full" in rate and "consume" in rate:
        ratios["full_vs_raw_consume"] = round(rate["full"] / rate["consume"], 3)
    for lower, upper in zip(stages, stages[1:]):
        ratios[f"{upper}_vs_{lower}"] = round(rate[upper] / rate[lower], 3)
    return {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
        "input": {"events": sent.sent, "records": sum(ends.values()), "skus": skus, "locations": locations,
                  "seed": seed, "partitions": len(ends)},
        "runs": runs, "rungs": rungs, "ratios": ratios, "broker": broker,
        "targets": {"full_records_per_s": 50_000, "full_vs_bytewax_passthrough": 0.6},
        "reproduce": f"python -m loadtest.bench.ladder --events {events} --runs {runs} --skus {skus} "
                     f"--locations {locations} --seed {seed}" + (f" --broker {broker} --stages {','.join(stages)}"
                                                                 if broker != "tansu" or stages != STAGES else ""),
    }


def markdown(r: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {x['label']} | {x['median_records_per_s']:,} | {x['median_cpu_s']:.1f} | {x['median_broker_cpu_s']:.1f} | "
        f"{x['median_redis_cpu_s']:.1f} | {x['median_peak_rss_mib']:.0f} |" for x in r["rungs"])
    i, ratios = r["input"], r["ratios"]
    full = next((x["median_records_per_s"] for x in r["rungs"] if x["stage"] == "full"), None)
    verdict = ""
    if full is not None and "full_vs_bytewax_passthrough" in ratios:
        t = r["targets"]
        verdict = (f"\nFull pipeline: **{full:,} records/s**, {full / t['full_records_per_s']:.0%} of the "
                   f"{t['full_records_per_s']:,}/s target; **{ratios['full_vs_bytewax_passthrough']:.0%}** of the "
                   f"Bytewax pass-through ceiling measured in the same run (target {t['full_vs_bytewax_passthrough']:.0%}).\n")
    ratio_lines = "\n".join(f"- {k.replace('_', ' ')}: {v}" for k, v in ratios.items())
    return f"""# Benchmark ladder

Finished {r['finished_at']}, {r['machine']['cpus']} CPUs, Python {r['machine']['python']}; {BROKERS[r.get('broker', 'tansu')]}
and Redis on loopback. Input: {i['events']:,} simulated events ({i['records']:,} records, {i['skus']:,} SKUs ×
{i['locations']} locations, seed {i['seed']}, {i['partitions']} partitions), pre-produced once. Each rung is its
own process, 1 worker, run {r['runs']} times interleaved with the others; medians below. CPU is the
rung's process; the broker's and Redis's CPU during the rung are listed beside it.
{verdict}
| rung | records/s | CPU s | broker CPU s | Redis CPU s | peak RSS MiB |
|---|---|---|---|---|---|
{rows}

Ratios (medians):
{ratio_lines}

![records per second per rung]({name_of(r.get('broker', 'tansu'))}.png)

Reproduce: `{r['reproduce']}`
"""


def plot(r: dict[str, Any], path: Path) -> bool:
    return bar_chart(path, [x["label"] for x in r["rungs"]], [x["median_records_per_s"] for x in r["rungs"]],
                     "records per second (median)",
                     f"Where the time goes: {r['input']['records']:,} records, 1 worker, {r['machine']['cpus']} CPUs",
                     target=(50_000, "target: 50,000/s"))


def main() -> None:
    ap = parser(__doc__ or "")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset, in ladder order")
    ap.add_argument("--broker", choices=sorted(BROKERS), default="tansu",
                    help="the private stack's broker; kafka writes ladder-kafka.* beside tansu's ladder.*")
    a = ap.parse_args()
    stages = tuple(s for s in STAGES if s in a.stages.split(","))
    with tempfile.TemporaryDirectory(prefix="atp-ladder-") as tmp:
        report = run(a.events, a.runs, a.skus, a.locations, a.seed, Path(tmp), stages, a.broker)
    text = write_report(a.report_dir, name_of(a.broker), report, markdown)
    plot(report, a.report_dir / f"{name_of(a.broker)}.png")
    print(text)


if __name__ == "__main__":
    main()
