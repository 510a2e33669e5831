"""Writing a chaos report: JSON for machines, Markdown for people."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPORT_DIR = Path(__file__).resolve().parents[1] / "reports"


def write(report: dict[str, Any], directory: Path = REPORT_DIR, name: str = "chaos") -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    js, md = directory / f"{name}.json", directory / f"{name}.md"
    js.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    md.write_text(markdown(report))
    return js, md


def markdown(r: dict[str, Any]) -> str:
    e, c, cfg = r["events"], r["checks"], r["config"]
    ok = "PASSED" if r["passed"] else "FAILED"
    lines = [
        f"# Chaos run: {ok}",
        "",
        f"{r['started_at']}, {r['duration_s']:.0f} s, {r['machine']['cpus']} CPUs, Python {r['machine']['python']}. "
        f"Seed {cfg['seed']}: {cfg['events']:,} events over {cfg['skus']:,} SKUs x {cfg['locations']} locations, "
        f"offered at {r['offered_rate']:,.0f} records/s, {cfg['workers']} worker(s), snapshots every "
        f"{cfg['snapshot_interval_s']} s. Broker: {cfg.get('broker', 'tansu')}.",
        "",
        "Reproduce: `atp chaos " + " ".join(_flags(cfg)) + "`",
        "",
        "## Input and output",
        "",
        "| | records |",
        "|---|---:|",
        f"| produced | {e['produced']:,} |",
        f"| in the log (read back) | {e['in_log']:,} |",
        f"| distinct valid events | {e['distinct_valid_events']:,} |",
        f"| duplicates produced / absorbed | {e['duplicates_produced']:,} / {e['duplicates_absorbed']:,} |",
        f"| poison produced / dead-lettered | {e['poison_produced']:,} / {e['dead_lettered']:,} |",
        f"| dead letters re-sent after crashes (same source offset) | {e['dead_letters_resent_after_crashes']:,} |",
        f"| valid + dead-lettered = produced | {'yes' if e['processed_plus_dead_lettered_equals_produced'] else 'NO'} |",
        "",
        "Dead-letter reasons: " + ", ".join(f"`{k}` {v}" for k, v in sorted(e["dead_letter_reasons"].items())),
        "",
        "## Checks (each must be 0)",
        "",
        "| check | value |",
        "|---|---:|",
        *(f"| {k.replace('_', ' ')} | {v} |" for k, v in c.items()),
        "",
        f"Keys compared with the oracle: {r['keys']['compared_redis']:,} in Redis, {r['keys']['compared_http']:,} "
        f"over HTTP. The API poller read {r['api']['positions_read']:,} positions; responses: "
        + ", ".join(f"{k}: {v:,}" for k, v in sorted(r["api"]["responses"].items())) + ".",
        "",
        "## Faults",
        "",
        "| at (s) | fault | duration (s) | resumed from offset | replayed (at least) | recovered after (s) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for f in r["faults"]:
        lines.append(
            f"| {f['at_s']:.0f} | {f['kind']} | {f['duration_s'] or ''} | {_n(f['resume_offsets'])} | "
            f"{_n(f['replayed_at_least'])} | {f['recovery_s'] if f['recovery_s'] is not None else ''} |"
        )
    lines += [
        "",
        "Recovered after: for a kill, from the kill to the restarted dataflow consuming past the offsets the",
        "killed one had reached; for a kill of the broker, from the kill to the dataflow reading again from",
        "the restarted broker; for a Redis loss, from the loss to the keyspace being marked ready again",
        "(the API answers 503 in between). Replayed counts are lower bounds: the offsets before a kill are",
        "sampled every 0.25 s.",
        "",
    ]
    if r["unplanned_exits"]:
        lines += ["## Unplanned exits", "", *("```\n" + x + "\n```" for x in r["unplanned_exits"]), ""]
    return "\n".join(lines)


def _n(v: int | None) -> str:
    return "" if v is None else f"{v:,}"


def _flags(cfg: dict[str, Any]) -> list[str]:
    """Every option of ``atp chaos`` that reproduces this configuration."""
    gap, pause = cfg["kill_gap_s"], cfg["pause_s"]
    pauses = cfg["pause_dataflow"] and cfg["pause_redis"]
    return [
        f"--events {cfg['events']}", f"--skus {cfg['skus']}", f"--locations {cfg['locations']}",
        f"--seed {cfg['seed']}", f"--rate {cfg['rate']:g}", f"--kills {cfg['kills']}", f"--gap {gap[0]:g},{gap[1]:g}",
        f"--redis-loss {cfg['redis_loss']}", "--pauses" if pauses else "--no-pauses", f"--pause {pause[0]:g},{pause[1]:g}",
        f"--duplicates {cfg['duplicates']:g}", f"--poison {cfg['poison']:g}", f"--workers {cfg['workers']}",
        f"--snapshot-interval {cfg['snapshot_interval_s']:g}", f"--broker {cfg.get('broker', 'tansu')}",
        f"--broker-kills {cfg.get('broker_kills', 0)}", "--pause-broker" if cfg.get("pause_broker") else "--no-pause-broker",
    ]
