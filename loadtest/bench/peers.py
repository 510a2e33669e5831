"""Peers, same input, same run: the dataflow against what a user would otherwise pick.

One pre-produced input; then, ``--runs`` times interleaved, each peer in its own process:

- ``atp``: the production dataflow (Bytewax, recovery on: the ladder's ``full`` rung);
- ``quix``: Quix Streams with RocksDB state and changelog topics (``pip install -e '.[peers]'``);
- ``loop``: a hand-rolled confluent-kafka loop writing each event's position to Redis at once;
- ``batch``: one pass of a periodic batch sync (its freshness is modelled from the pass time).

Every peer writes its own Redis keyspace, and every run is compared key by key with the
independent oracle: a peer that computes other positions gets no throughput figure.
Writes ``loadtest/reports/peers.{json,md,png}``.

    python -m loadtest.bench.peers --events 200000
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
from loadtest.common.harness import bar_chart, measure, parser, private_stack, produce, write_ends, write_report
from loadtest.common.machine import machine
from loadtest.truth.verify import LogTruth, Verdict, check_redis_positions, read_truth

PEERS = ("atp", "quix", "loop", "batch")
LABELS = {"atp": "atp-stream (Bytewax, recovery on)", "quix": "Quix Streams (RocksDB, changelog)",
          "loop": "hand-rolled consumer loop", "batch": "batch sync, one pass"}
SYNC_PERIOD_S = 15 * 60  # the periodic sync a vendor documents


def _args(peer: str, ends_file: Path, work: Path) -> list[str]:
    if peer == "atp":
        return ["loadtest.bench.ladder_stage", "full", str(ends_file)]
    if peer == "quix":
        return ["loadtest.bench.peer_quix", str(ends_file), str(work / "quix-state")]
    return [f"loadtest.peer_{peer}", str(ends_file)]


def quix_available() -> bool:
    try:
        import quixstreams  # noqa: F401
    except ImportError:
        return False
    return True


def _run(peer: str, settings: Settings, ends_file: Path, truth: LogTruth, i: int) -> dict[str, Any]:
    s = settings.model_copy(update={"state_dir": settings.state_dir / f"{peer}-{i}",
                                    "redis_key_prefix": f"peer-{peer}-{i}"})
    s.state_dir.mkdir(parents=True, exist_ok=True)
    m = measure(_args(peer, ends_file, s.state_dir), child_environ(s, os.environ), settings.state_dir, f"{peer}-{i}")
    if m.exit_code != 0:
        raise RuntimeError(f"peer {peer} failed:\n{m.stderr[-3000:]}")
    out = json.loads(m.stdout.strip().splitlines()[-1])
    v = Verdict(truth)
    check_redis_positions(s, truth, v)
    ok = not v.redis_mismatches
    rate = round(out["records"] / out["seconds"]) if out["seconds"] > 0 else 0
    return {"peer": peer, "records": out["records"], "seconds": round(out["seconds"], 3), "wall_s": round(m.wall_s, 2),
            "records_per_s": rate if ok else None, "measured_records_per_s": rate, "cpu_s": round(m.cpu_s, 2),
            "peak_rss_mib": out["peak_rss_mib"], "keys": v.keys, "mismatched_keys": len(v.redis_mismatches),
            "matches_oracle": ok, "first_mismatch": v.redis_mismatches[0] if v.redis_mismatches else None}


def run(events: int, runs: int, skus: int, locations: int, seed: int, work_dir: Path,
        peers: tuple[str, ...]) -> dict[str, Any]:
    samples: dict[str, list[dict[str, Any]]] = {p: [] for p in peers}
    with private_stack(work_dir) as (settings, _stack):
        sent = produce(settings, events, skus, locations, seed)
        ends, ends_file = write_ends(settings, work_dir)
        truth = read_truth(settings)
        print(f"oracle: {len(truth.expected):,} keys from {truth.log_records:,} records", file=sys.stderr)
        for i in range(runs):
            for peer in peers:
                r = _run(peer, settings, ends_file, truth, i)
                samples[peer].append(r)
                print(f"run {i + 1} {peer:6} {r['measured_records_per_s']:>9,} rec/s  cpu {r['cpu_s']:.1f} s  "
                      f"oracle {'equal' if r['matches_oracle'] else 'DIFFERENT'} ({r['keys']:,} keys)", file=sys.stderr)
    rows = []
    for peer in peers:
        rs = samples[peer]
        valid = all(r["matches_oracle"] for r in rs)
        rows.append({"peer": peer, "label": LABELS[peer], "matches_oracle": valid,
                     "median_records_per_s": round(statistics.median(r["measured_records_per_s"] for r in rs)) if valid else None,
                     "median_seconds": statistics.median(r["seconds"] for r in rs),
                     "median_cpu_s": statistics.median(r["cpu_s"] for r in rs),
                     "median_peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in rs), "runs": rs})
    rate = {r["peer"]: r["median_records_per_s"] for r in rows}
    ratios = {f"atp_vs_{p}": round(rate["atp"] / rate[p], 2) for p in peers
              if p not in ("atp", "batch") and rate.get("atp") and rate.get(p)}  # a batch pass is not a stream
    batch = next((r for r in rows if r["peer"] == "batch"), None)
    freshness = None
    if batch is not None:
        t = batch["median_seconds"]  # an event waits for the next pass (uniform over the period), then the pass
        freshness = {"period_s": SYNC_PERIOD_S, "pass_s": t,
                     **{f"p{p}": round(p / 100 * SYNC_PERIOD_S + t, 1) for p in (50, 95, 99)}}
    return {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
        "input": {"events": sent.sent, "records": sum(ends.values()), "keys": len(truth.expected), "skus": skus,
                  "locations": locations, "seed": seed, "partitions": len(ends)},
        "runs": runs, "peers": rows, "ratios": ratios, "batch_freshness_s": freshness,
        "targets": {"atp_vs_quix": 2.0, "atp_vs_loop": 10.0},
        "reproduce": f"python -m loadtest.bench.peers --events {events} --runs {runs} --skus {skus} "
                     f"--locations {locations} --seed {seed}",
    }


def markdown(r: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {x['label']} | {x['median_records_per_s'] if x['median_records_per_s'] is not None else 'void'} | "
        f"{x['median_seconds']:.1f} | {x['median_cpu_s']:.1f} | {x['median_peak_rss_mib']:.0f} | "
        f"{'equal' if x['matches_oracle'] else '**different**'} |" for x in r["peers"])
    i, t = r["input"], r["targets"]
    ratio_lines = "\n".join(
        f"- {k.replace('_', ' ')}: **{v}×**" + (f" (target ≥ {t[k]:g}×: {'met' if v >= t[k] else 'missed'})" if k in t else "")
        for k, v in r["ratios"].items())
    f = r["batch_freshness_s"]
    fresh = (f"\nA batch sync every {f['period_s'] // 60:.0f} minutes whose pass takes {f['pass_s']:.1f} s serves an "
             f"event after the wait for the next pass plus the pass: p50 {f['p50']:,} s, p95 {f['p95']:,} s, "
             f"p99 {f['p99']:,} s (modelled from the measured pass). `atp loadtest` measures the dataflow's "
             f"freshness in milliseconds.\n") if f else ""
    return f"""# Peers: same input, same run

Finished {r['finished_at']}, {r['machine']['cpus']} CPUs, Python {r['machine']['python']}; embedded broker and
Redis on loopback. Input: {i['events']:,} simulated events ({i['records']:,} records, {i['keys']:,} keys, seed
{i['seed']}, {i['partitions']} partitions), pre-produced once. Each peer is its own process, run {r['runs']} times
interleaved; medians below. Records/s counts from a peer's first record to its last Redis write (the
atp rung also counts its start-up; Quix's idle wait before its final checkpoint is left out, its
final write is counted). The batch pass is listed for its freshness, not as a stream. Every run was compared key by key with the independent oracle;
a peer whose positions differ has no throughput figure ("void").

| peer | records/s | seconds | CPU s | peak RSS MiB | positions vs oracle |
|---|---|---|---|---|---|
{rows}

Ratios (medians):
{ratio_lines}
{fresh}
![records per second per peer](peers.png)

Reproduce: `{r['reproduce']}`
"""


def plot(r: dict[str, Any], path: Path) -> bool:
    rows = [x for x in r["peers"] if x["median_records_per_s"]]
    return bar_chart(path, [x["label"] for x in rows], [x["median_records_per_s"] for x in rows],
                     "records per second (median), same input, positions equal to the oracle",
                     f"Peers: {r['input']['records']:,} records, {r['machine']['cpus']} CPUs", height=3)


def main() -> None:
    ap = parser(__doc__ or "")
    ap.add_argument("--peers", default=",".join(PEERS), help="comma-separated subset")
    a = ap.parse_args()
    peers = tuple(p for p in PEERS if p in a.peers.split(","))
    if "quix" in peers and not quix_available():
        print("quixstreams is not installed (make peers): leaving Quix out", file=sys.stderr)
        peers = tuple(p for p in peers if p != "quix")
    with tempfile.TemporaryDirectory(prefix="atp-peers-") as tmp:
        report = run(a.events, a.runs, a.skus, a.locations, a.seed, Path(tmp), peers)
    text = write_report(a.report_dir, "peers", report, markdown)
    plot(report, a.report_dir / "peers.png")
    print(text)


if __name__ == "__main__":
    main()
