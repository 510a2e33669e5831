"""Replay throughput: how long `atp replay` takes to rebuild N events into a new generation.

Starts a private stack, produces a seeded input once, then runs `atp replay` as a child process
``--runs`` times (each into its own generation, dropped afterwards), timing each from spawn to
exit and sampling its peak RSS. The first build is checked against the oracle and every later one
against the first, so a fast wrong answer does not count. Writes ``loadtest/reports/replay.{json,md}``.

    python -m loadtest.replay_bench --events 1000000
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import redis

from atp.config import Settings, load_settings
from atp.generations import drop
from atp.producer import EventProducer
from atp.stack import Stack, free_port
from atp.verify import compare
from loadtest.chaos import machine
from loadtest.chaos_verify import read_truth
from loadtest.child import Child
from loadtest.pace import send_paced
from loadtest.simulator import Simulator

REPORT_DIR = Path(__file__).resolve().parent / "reports"
_SUMMARY = re.compile(r"replayed ([\d,]+) records .* in ([\d.]+) s: ([\d,]+) rec/s, ([\d,]+) keys")


def _peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _one(settings: Settings, name: str, log_dir: Path) -> dict[str, Any]:
    child = Child(["replay", name, "--metrics-port", "0"], settings, log_dir / f"{name}.log")
    started = time.monotonic()
    child.start()
    assert child.p is not None
    peak = 0.0
    while child.p.poll() is None:
        peak = max(peak, _peak_rss_mib(child.p.pid) or 0.0)
        time.sleep(0.2)
    wall = time.monotonic() - started
    found = _SUMMARY.search(child.tail())
    if child.p.returncode != 0 or found is None:
        raise RuntimeError(f"replay {name} failed (exit {child.p.returncode}):\n{child.tail()}")
    records, inner_s, _, keys = (float(g.replace(",", "")) for g in found.groups())
    return {"generation": name, "records": int(records), "keys": int(keys), "wall_s": round(wall, 2),
            "replay_s": inner_s, "records_per_s_wall": round(records / wall), "peak_rss_mib": round(peak, 1)}


def run(events: int, runs: int, skus: int, locations: int, seed: int, work_dir: Path) -> dict[str, Any]:
    settings = load_settings({}, state_dir=work_dir / "state", kafka_bootstrap=f"127.0.0.1:{free_port()}",
                             redis_url=f"redis://127.0.0.1:{free_port()}/0", metrics_port=0,
                             redis_key_prefix="bench")
    stack = Stack(settings)
    try:
        stack.up()
        sent = send_paced(Simulator(seed, skus, locations), EventProducer(settings), 0, events)
        print(f"produced {sent.sent:,} events in {sent.seconds:.1f} s", file=sys.stderr)
        client = redis.Redis.from_url(settings.redis_url)
        results, first = [], None
        for i in range(runs):
            name = f"bench-{i + 1}"
            r = _one(settings, name, work_dir)
            print(f"run {i + 1}: {r}", file=sys.stderr)
            if first is None:
                truth = read_truth(settings)
                got = compare_to_oracle(client, settings, name, truth)
                r["oracle_mismatches"] = got
                first = name
            else:
                diff = compare(client, settings.generations.keyspace(name), settings.generations.keyspace(first))
                r["differs_from_first"] = 0 if diff.passed else len(diff.different) + len(diff.version_apart)
                drop(settings, client, name)
            results.append(r)
        drop(settings, client, first or "")
    finally:
        stack.down()
    walls = [r["wall_s"] for r in results]
    return {
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
        "input": {"events": sent.sent, "skus": skus, "locations": locations, "seed": seed,
                  "partitions": settings.topic_partitions * 3},
        "runs": results,
        "median_wall_s": statistics.median(walls),
        "median_records_per_s": round(statistics.median(r["records_per_s_wall"] for r in results)),
        "reproduce": f"python -m loadtest.replay_bench --events {events} --runs {runs} --skus {skus} "
                     f"--locations {locations} --seed {seed}",
    }


def compare_to_oracle(client: redis.Redis, settings: Settings, name: str, truth: Any) -> int:
    """Keys of generation ``name`` whose fields differ from the oracle's (0 is the only good answer)."""
    ks = settings.generations.keyspace(name)
    bad = 0
    keys = list(truth.expected)
    for i in range(0, len(keys), 1000):
        pipe = client.pipeline(transaction=False)
        for k in keys[i:i + 1000]:
            sku, loc = k.split("@")
            pipe.hgetall(ks.position(sku, loc))
        for k, raw in zip(keys[i:i + 1000], pipe.execute()):
            got = {a.decode(): int(b) for a, b in raw.items() if a.decode() in truth.expected[k].fields()}
            bad += got != truth.expected[k].fields()
    return bad


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
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skus", type=int, default=5_000)
    ap.add_argument("--locations", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--report-dir", type=Path, default=REPORT_DIR)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="atp-replay-bench-") as tmp:
        report = run(a.events, a.runs, a.skus, a.locations, a.seed, Path(tmp))
    a.report_dir.mkdir(parents=True, exist_ok=True)
    (a.report_dir / "replay.json").write_text(json.dumps(report, indent=2) + "\n")
    (a.report_dir / "replay.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
