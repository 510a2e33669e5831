"""What API keys cost a read: the load test's single-key API run with auth off and on, same run.

One private Redis holding ``--keys`` positions; for each configuration an ``atp serve`` (one worker)
is started and ``wrk`` reads random keys as fast as it goes (32 connections, ``--seconds``), the
configurations taking turns for ``--rounds`` rounds so that drift of a shared machine hits all
alike. Configurations:

- ``off``: ``ATP_API_AUTH=disabled`` (the figures of the load test so far);
- ``key``: auth on, a key without a rate (the token check only);
- ``key+rate``: auth on, a key with a rate no one reaches (the token check and the Redis token bucket,
  one more round trip a request);
- ``key+rate+log``: as ``key+rate``, with the access log on (one line a request, to a file).

Writes ``loadtest/reports/auth-cost.{json,md}``: medians over the rounds, and each configuration's
ratio to ``off``.

    python -m loadtest.bench.authcost --rounds 3 --seconds 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from core.config import Settings
from dataflows.redis_sink import RedisPositionSink
from loadtest.common.harness import REPORT_DIR, private_stack, write_report
from loadtest.common.machine import machine
from loadtest.load import api as apiload
from projection.client import connect
from projection.generations import write_meta
from projection.keys import READY, keyspace_of
from sandbox.child import Child
from sandbox.stack import free_port
from serving.auth.keyfile import create, load_secret
from state.position import Position

CONFIGS = ("off", "key", "key+rate", "key+rate+log")


def seed_positions(s: Settings, n: int) -> list[tuple[str, str]]:
    keys = [(f"SKU-{i:06d}", f"DC-{i % 20:02d}") for i in range(n)]
    write_meta(connect(s), keyspace_of(s), "authcost", READY)
    part = RedisPositionSink(s.redis_url, keyspace_of(s)).build("authcost", 0, 1)
    for start in range(0, n, 1000):
        part.write_batch([Position(sku, loc, 1, 5, 10, 10, 5, 0, 0, 0, 0, 1_767_225_600_000, 1_767_225_600_000)
                          for sku, loc in keys[start:start + 1000]])
    part.close()
    return keys


def wait_up(url: str, child: Child, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"the API exited:\n{child.tail()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the API did not answer {url} in {timeout_s:g} s")


def settings_for(base: Settings, config: str) -> Settings:
    return base.model_copy(update={"api_auth": "disabled" if config == "off" else "required",
                                   "api_access_log": config.endswith("log"), "api_port": free_port()})


def run(rounds: int, seconds: float, n_keys: int, work: Path) -> dict[str, Any]:
    runs: dict[str, list[apiload.WrkResult]] = {c: [] for c in CONFIGS}
    with private_stack(work) as (s, _stack):
        keys = seed_positions(s, n_keys)
        secret = load_secret(s.key_secret_file, create=True)
        tokens = {"key": create(s.keys_file, secret, "bench-key", ["availability:read"], rate=0),
                  "key+rate": create(s.keys_file, secret, "bench-rate", ["availability:read"], rate=1e9)}
        tokens["key+rate+log"] = tokens["key+rate"]
        for r in range(rounds):
            for config in CONFIGS:
                cs = settings_for(s, config)
                api = Child(["serve"], cs, work / f"serve-{config}-{r}.log").start()
                try:
                    base = f"http://{cs.api_host}:{cs.api_port}"
                    wait_up(f"{base}/healthz", api)
                    result = apiload.run_wrk(base, keys, work, f"{config}-{r}", seconds, connections=32,
                                             token=tokens.get(config))
                finally:
                    api.stop()
                runs[config].append(result)
                print(f"round {r + 1}/{rounds} {config:13} {result.rps:>9,.0f} rps  p99 {result.latency_ms['p99']} ms"
                      f"  errors {result.errors}", file=sys.stderr)
    off = statistics.median(x.rps for x in runs["off"])
    return {
        "kind": "auth-cost",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "config": {"rounds": rounds, "seconds": seconds, "keys": n_keys, "connections": 32, "api_workers": 1},
        "results": {c: {"rps_median": round(statistics.median(x.rps for x in rs)),
                        "p99_ms_median": statistics.median(x.latency_ms["p99"] for x in rs),
                        "p50_ms_median": statistics.median(x.latency_ms["p50"] for x in rs),
                        "ratio_to_off": round(statistics.median(x.rps for x in rs) / off, 3),
                        "errors": sum(x.errors for x in rs),
                        "rps_runs": [round(x.rps) for x in rs]} for c, rs in runs.items()},
    }


def markdown(report: dict[str, Any]) -> str:
    cfg, m = report["config"], report["machine"]
    lines = [
        "# What API keys cost a read", "",
        f"Run {report['started_at']} on {m['cpus']} CPUs, Python {m['python']}: one `atp serve` worker, `wrk` with "
        f"{cfg['connections']} connections reading random keys of {cfg['keys']:,} as fast as it goes, "
        f"{cfg['seconds']:g} s a run, the configurations taking turns for {cfg['rounds']} rounds (medians; the "
        "client shares the machine's 2 cores with the API and Redis, so the figures are for comparison, not capacity).",
        "", "| configuration | reads/s (median) | ratio to off | p50 ms | p99 ms | non-2xx or socket errors | runs (reads/s) |",
        "|---|---:|---:|---:|---:|---:|---|"]
    what = {"off": "auth off (`ATP_API_AUTH=disabled`)", "key": "a key, no rate", "key+rate": "a key with a rate "
            "(Redis token bucket)", "key+rate+log": "a key with a rate, access log on"}
    for c, r in report["results"].items():
        lines.append(f"| {what[c]} | {r['rps_median']:,} | {r['ratio_to_off']:.2f} | {r['p50_ms_median']} | "
                     f"{r['p99_ms_median']} | {r['errors']} | {', '.join(f'{x:,}' for x in r['rps_runs'])} |")
    lines += ["", "Reproduce: `python -m loadtest.bench.authcost --rounds "
              f"{cfg['rounds']} --seconds {cfg['seconds']:g} --keys {cfg['keys']}` (needs `wrk`: `make loadtest` "
              "installs it).", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--report-dir", type=Path, default=REPORT_DIR)
    args = ap.parse_args()
    if apiload.wrk_binary() is None:
        sys.exit("wrk is not installed: apt-get install wrk (or make loadtest)")
    with tempfile.TemporaryDirectory(prefix="atp-authcost-") as tmp:
        report = run(args.rounds, args.seconds, args.keys, Path(tmp))
    print(write_report(args.report_dir, "auth-cost", report, markdown))


if __name__ == "__main__":
    main()
