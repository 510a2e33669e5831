"""The report of ``atp loadtest``: JSON (with the targets and where each stands), Markdown, a plot."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtest.common.harness import pyplot
from loadtest.common.machine import machine
from loadtest.load.config import LoadConfig, Phase
from loadtest.workload.generator import LagPoint
from loadtest.workload.probes import Sample, percentiles

TARGETS = {"freshness_p99_ms_at_10k": 250, "freshness_p99_ms_at_80pct_max": 1000,
           "api_single_key_rps": 10_000, "api_p99_ms_at_5000_rps": 10, "api_batch100_p99_ms": 25}


def bounded(ph: Phase) -> bool:
    """Lag bounded over a constant-rate step: the generator offered >= 95 % of the target, the
    backlog at the end is under two seconds of input, and over the step's second half it grew by
    less than 2 % of the rate per second (least-squares slope)."""
    pts = ph.lag
    if len(pts) < 4 or ph.offered.seconds <= 0:
        return False
    if ph.offered.sent / ph.offered.seconds < 0.95 * ph.target_rate:
        return False
    half = pts[len(pts) // 2:]
    n = len(half)
    mt = sum(p.t_s for p in half) / n
    ml = sum(p.lag for p in half) / n
    var = sum((p.t_s - mt) ** 2 for p in half)
    slope = sum((p.t_s - mt) * (p.lag - ml) for p in half) / var if var else 0.0
    return pts[-1].lag <= 2 * ph.target_rate and slope < 0.02 * ph.target_rate


def _phase_row(ph: Phase, samples: dict[str, list[Sample]]) -> dict[str, Any]:
    o = ph.offered
    return {
        "name": ph.name, "target_peak_rate": round(ph.target_rate), "offered_events": o.sent, "probes": o.probes,
        "seconds": round(o.seconds, 1), "offered_rate": round(o.sent / o.seconds) if o.seconds else 0,
        "offered_peak_second": max(o.per_second) if o.per_second else 0,
        "lag_max": max((p.lag for p in ph.lag), default=None), "lag_end": ph.lag[-1].lag if ph.lag else None,
        "bounded": bounded(ph) if ph.name.startswith("step-") else None,
        "freshness_redis_ms": ph.freshness(samples["redis"]), "freshness_http_ms": ph.freshness(samples["http"]),
        "cores_used": ph.cores,
        "offered_per_second": o.per_second,
    }


def build_report(cfg: LoadConfig, phases: list[Phase], api: list[dict[str, Any]], samples: dict[str, list[Sample]],
                 points: list[LagPoint], started_wall: float, t0_mono: float) -> dict[str, Any]:
    rows = [_phase_row(ph, samples) for ph in phases]
    steps = [r for r in rows if r["name"].startswith("step-")]
    best = max((r["target_peak_rate"] for r in steps if r["bounded"]), default=None)
    timeline = []
    for a, b in zip(points, points[1:]):
        dt = b.t_s - a.t_s
        if dt > 0:
            timeline.append({"t_s": b.t_s, "lag": b.lag, "produced_per_s": round((b.produced - a.produced) / dt),
                             "consumed_per_s": round((b.consumed - a.consumed) / dt)})
    p = cfg.profile
    report: dict[str, Any] = {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
        "config": {"profile": p.__dict__, "skus": cfg.skus, "locations": cfg.locations, "seed": cfg.seed,
                   "workers": cfg.workers, "api_workers": cfg.api_workers, "probe_interval_s": cfg.probe_interval_s, "probe_keys": cfg.probe_keys,
                   "step_s": cfg.step_s if cfg.find_max else None, "broker": cfg.broker,
                   "snapshot_s": cfg.snapshot_s},
        "phases": rows,
        "freshness_ms": {"redis": {"samples": len(samples["redis"]), **percentiles([s.latency_ms for s in samples["redis"]])},
                         "http": {"samples": len(samples["http"]), **percentiles([s.latency_ms for s in samples["http"]])}},
        "max_sustainable_rate": best,
        "timeline": timeline,
        "api": api,
        "freshness_cdf_ms": {k: sorted(round(s.latency_ms, 1) for s in v) for k, v in samples.items()},
        "reproduce": reproduce(cfg),
    }
    report["targets"] = _targets(report)
    return report


def reproduce(cfg: LoadConfig) -> str:
    """The command that runs the same load test: every option spelled out, defaults included."""
    p = cfg.profile
    phases = ",".join(f"{x:g}" for x in (p.warmup_s, p.ramp_s, p.hold_s, p.decay_s, p.cooldown_s))
    find_max = (f" --find-max --steps {','.join(f'{r:g}' for r in cfg.step_rates)} --step-s {cfg.step_s:g}"
                if cfg.find_max else "")
    return (f"atp loadtest --base-rate {p.base_rate:g} --peak-factor {p.peak_factor:g} --phases {phases} "
            f"--skus {cfg.skus} --locations {cfg.locations} --seed {cfg.seed} --workers {cfg.workers} "
            f"--snapshot-s {cfg.snapshot_s:g} "
            f"--api-workers {cfg.api_workers} --api-s {cfg.api_s:g} --api-rate {cfg.api_rate:g} "
            f"--broker {cfg.broker}{find_max}")


def _targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    peak = next((x for x in r["phases"] if x["name"] == "peak"), None)
    at10k = [x for x in r["phases"] if x["name"] == "peak" and x["target_peak_rate"] >= 10_000]
    if peak and at10k:
        v = peak["freshness_redis_ms"]["p99"]
        out.append({"target": "freshness p99 <= 250 ms at 10,000 ev/s (peak profile, Redis)", "measured": v,
                    "met": v is not None and v <= 250})
    p80 = next((x for x in r["phases"] if x["name"].startswith("at-80pct")), None)
    if p80:
        v = p80["freshness_redis_ms"]["p99"]
        out.append({"target": "freshness p99 <= 1 s at 80 % of the max sustainable rate", "measured": v,
                    "met": v is not None and v <= 1000})
    if r["max_sustainable_rate"] is not None:
        out.append({"target": "max sustainable rate >= 50,000 ev/s", "measured": r["max_sustainable_rate"],
                    "met": r["max_sustainable_rate"] >= 50_000})
    api = {a["name"]: a for a in r["api"]}
    for where, prefix in (("the API alone", "alone_"), ("beside the pipeline", "")):
        single = next((a for n, a in api.items() if n.startswith(prefix + "single-key_max")), None)
        if single:
            out.append({"target": f"API >= 10,000 single-key reads/s ({where})", "measured": round(single["rps"]),
                        "met": single["rps"] >= 10_000})
        fixed = next((a for n, a in api.items() if n.startswith(prefix + "single-key_at")), None)
        if fixed:
            v = fixed["latency_ms"]["p99"]
            out.append({"target": f"API p99 <= 10 ms at {fixed['target_rps']:,.0f} rps ({where}; "
                                  f"achieved {fixed['rps']:,.0f})", "measured": v, "met": v <= 10})
        batch = next((a for n, a in api.items() if n.startswith(prefix + "100-key_batch_at")), None)
        if batch:
            v = batch["latency_ms"]["p99"]
            out.append({"target": f"API 100-key batch p99 <= 25 ms ({where}; achieved {batch['rps']:,.0f}/s)",
                        "measured": v, "met": v <= 25})
    return out


def markdown(r: dict[str, Any]) -> str:
    c = r["config"]
    p = c["profile"]
    rows = "\n".join(
        f"| {x['name']} | {x['target_peak_rate']:,} | {x['offered_rate']:,} | {x['offered_peak_second']:,} | "
        f"{x['lag_max'] if x['lag_max'] is not None else '-'} | "
        f"{_pcts(x['freshness_redis_ms'])} | {_pcts(x['freshness_http_ms'])} |"
        + ("" if x["bounded"] is None else (" bounded |" if x["bounded"] else " **not bounded** |"))
        for x in r["phases"])
    api = "\n".join(f"| {a['name'].replace('_', ' ')} | {a['connections']} | {a['rps']:,.0f} | {a['latency_ms']['p50']} | "
                    f"{a['latency_ms']['p90']} | {a['latency_ms']['p99']} | {a['errors']} |" for a in r["api"])
    targets = "\n".join(f"| {t['target']} | {t['measured']} | {'met' if t['met'] else '**missed**'} |" for t in r["targets"])
    fr = r["freshness_ms"]
    return f"""# Load test: peak season

Finished {r['finished_at']}, {r['machine']['cpus']} CPUs, Python {r['machine']['python']}. Everything on this one
machine: the {'embedded broker (tansu)' if c.get('broker', 'tansu') == 'tansu' else 'Apache Kafka broker (single-node KRaft)'}, Redis, the dataflow ({c['workers']} worker, recovery on, a snapshot every {c.get('snapshot_s', 5.0):g} s), the API
({c['api_workers']} processes), the
generator, the probe watchers and wrk. Input: the simulator's event mix over {c['skus']:,} SKUs (Zipf) ×
{c['locations']} locations, seed {c['seed']}. Profile: {p['base_rate']:,.0f} ev/s for {p['warmup_s']:.0f} s, ramp
over {p['ramp_s']:.0f} s to {p['base_rate'] * p['peak_factor']:,.0f} ev/s, hold {p['hold_s']:.0f} s, decay
{p['decay_s']:.0f} s, {p['cooldown_s']:.0f} s at the baseline.

Freshness: produce() to readable, measured on probe events (one every {c['probe_interval_s'] * 1000:.0f} ms on
{c['probe_keys']} dedicated keys, the same path as every event); resolution: the watchers poll Redis every 5 ms
and the API every 25 ms. Whole run:
Redis {_pcts(fr['redis'])} ms ({fr['redis']['samples']:,} samples), HTTP {_pcts(fr['http'])} ms
({fr['http']['samples']:,} samples).

| phase | target ev/s | offered ev/s | busiest second | max lag | freshness Redis p50/p95/p99 ms | HTTP p50/p95/p99 ms |{' lag |' if any(x['bounded'] is not None for x in r['phases']) else ''}
|---|---|---|---|---|---|---|{'---|' if any(x['bounded'] is not None for x in r['phases']) else ''}
{rows}

CPU cores used per process (CPU seconds per second of the phase; the machine has {r['machine']['cpus']}):

| phase | {' | '.join(_cpu_names(r))} |
|---|{'---|' * len(_cpu_names(r))}
{_cpu_rows(r)}

Max sustainable rate (lag bounded for a whole step): {_max_line(r)}

## API (wrk: first alone, the generator idle; then while it offers the baseline rate)

| run | connections | rps | p50 ms | p90 ms | p99 ms | errors |
|---|---|---|---|---|---|---|
{api}

## Targets

| target | measured | |
|---|---|---|
{targets}

![rate, lag, freshness and API latency]({'loadtest' if c.get('broker', 'tansu') == 'tansu' else 'loadtest-' + c['broker']}.png)

Reproduce: `{r['reproduce']}`
"""


def _max_line(r: dict[str, Any]) -> str:
    if r["max_sustainable_rate"]:
        return f"**{r['max_sustainable_rate']:,} events/s**"
    if r["config"]["step_s"] is None:
        return "not measured (run with --find-max)"
    return "none of the steps was bounded (see the lag column)"


def _cpu_names(r: dict[str, Any]) -> list[str]:
    return list(r["phases"][0]["cores_used"]) if r["phases"] and r["phases"][0]["cores_used"] else []


def _cpu_rows(r: dict[str, Any]) -> str:
    names = _cpu_names(r)
    return "\n".join(f"| {x['name']} | " + " | ".join(f"{x['cores_used'].get(n, 0):.2f}" for n in names) + " |"
                     for x in r["phases"])


def _pcts(d: dict[str, Any]) -> str:
    return "/".join("-" if d.get(k) is None else f"{d[k]:g}" for k in ("p50", "p95", "p99"))


def plot(r: dict[str, Any], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    tl = r["timeline"]
    ts = [x["t_s"] for x in tl]
    ax.plot(ts, [x["produced_per_s"] for x in tl], label="offered ev/s", color="#4C72B0")
    ax.plot(ts, [x["consumed_per_s"] for x in tl], label="consumed ev/s", color="#55A868")
    ax.set_xlabel("seconds")
    ax.set_ylabel("events per second")
    ax2 = ax.twinx()
    ax2.plot(ts, [x["lag"] for x in tl], label="consumer lag", color="#C44E52", linestyle=":")
    ax2.set_ylabel("lag (records)")
    ax.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="upper right", fontsize=8)
    ax.set_title("Rate and consumer lag")
    ax = axes[1]
    for name, color in (("redis", "#4C72B0"), ("http", "#DD8452")):
        v = r["freshness_cdf_ms"][name]
        if v:
            ax.plot(v, [(i + 1) / len(v) for i in range(len(v))], label=f"{name} ({len(v):,} probes)", color=color)
    ax.axvline(250, color="#C44E52", linestyle="--", linewidth=1, label="250 ms")
    ax.set_xscale("log")
    ax.set_xlabel("produce() to readable, ms (log)")
    ax.set_ylabel("fraction of probes")
    ax.set_title("Freshness CDF, whole run")
    ax.legend(fontsize=8)
    ax = axes[2]
    api = r["api"]
    if api:
        labels = [a["name"].replace("_", " ") for a in api]
        for i, (k, color) in enumerate((("p50", "#4C72B0"), ("p90", "#DD8452"), ("p99", "#C44E52"))):
            ax.barh([j + i * 0.27 for j in range(len(api))], [a["latency_ms"][k] for a in api], height=0.27,
                    label=k, color=color)
        ax.set_yticks([j + 0.27 for j in range(len(api))], labels, fontsize=8)
        ax.set_xlabel("latency, ms")
        ax.legend(fontsize=8)
    ax.set_title("API latency (wrk)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
