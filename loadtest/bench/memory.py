"""Memory per sku@location key: the dataflow's RSS and Redis's bytes at many keys.

Two inputs on one private stack: a small one (``--base-keys``) and a large one (``--keys``), each
key getting one RECEIPT and one RESERVE (so it holds stock, an open order line and its demand
minute). The production dataflow (recovery on) reads each in its own process; the memory a key
costs is the difference in peak RSS divided by the difference in keys, so the interpreter, the
libraries and Bytewax's own buffers cancel out. Redis is measured the same way (``used_memory``).
Two peaks are taken: until the input was read (a live dataflow's memory) and over the whole run,
whose end of input makes Bytewax snapshot every key at once (``loadtest.bench.ladder_stage``).
Writes ``loadtest/reports/memory.{json,md}``.

    python -m loadtest.bench.memory --keys 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from rich.progress import Progress

from core.config import Settings, child_environ
from dataflows.kafka import admin as kafka_admin
from dataflows.kafka.producer import EventProducer
from loadtest.common.harness import REPORT_DIR, measure, private_stack, write_report
from loadtest.common.machine import machine

LOCATIONS = 20
T0 = 1_767_225_600_000


def produce_keys(settings: Settings, keys: int, tag: str) -> int:
    producer = EventProducer(settings)
    with Progress() as progress:
        task = progress.add_task(f"produce {keys:,} keys", total=keys)
        for i in range(keys):
            sku, loc = f"M{tag}-{i // LOCATIONS:07d}", f"DC-{i % LOCATIONS:02d}"
            base = {"source": "memory", "sku": sku, "location": loc}
            producer.send("wms", {**base, "event_id": f"m{tag}-r{i}", "occurred_at": T0 + i, "event_type": "RECEIPT",
                                  "qty": 10, "to_status": "AVAILABLE"})
            producer.send("orders", {**base, "event_id": f"m{tag}-o{i}", "occurred_at": T0 + i + 1,
                                     "event_type": "RESERVE", "order_id": f"O{i}", "order_line_id": f"L{i}",
                                     "channel": "web", "qty": 2})
            if i % 10_000 == 9_999:
                progress.update(task, completed=i + 1)
        progress.update(task, completed=keys)
    producer.flush(120)
    return producer.sent


def _used_memory(settings: Settings) -> int:
    return int(redis.Redis.from_url(settings.redis_url).info("memory")["used_memory"])


def _measure(settings: Settings, name: str, work: Path, ends: dict[str, int],
             starts: dict[str, int] | None = None) -> dict[str, Any]:
    """The production dataflow (the ladder's ``full`` rung) over ``starts``..``ends``, in its own process."""
    args = ["loadtest.bench.ladder_stage", "full", str(work / f"{name}-ends.json")]
    (work / f"{name}-ends.json").write_text(json.dumps(ends))
    if starts:
        args.append(str(work / f"{name}-starts.json"))
        (work / f"{name}-starts.json").write_text(json.dumps(starts))
    s = settings.model_copy(update={"state_dir": settings.state_dir / name, "redis_key_prefix": f"mem-{name}"})
    before = _used_memory(settings)
    m = measure(args, child_environ(s, os.environ), settings.state_dir, name)
    if m.exit_code != 0:
        raise RuntimeError(f"{name} failed:\n{m.stderr[-3000:]}")
    out = json.loads(m.stdout.strip().splitlines()[-1])
    return {"records": out["records"], "seconds": round(out["seconds"], 1), "peak_rss_mib": out["peak_rss_mib"],
            "input_read_peak_rss_mib": out["input_read_peak_rss_mib"], "redis_bytes": _used_memory(settings) - before}


def run(keys: int, base_keys: int, work: Path) -> dict[str, Any]:
    with private_stack(work) as (settings, _stack):
        produce_keys(settings, base_keys, "s")
        small_ends = kafka_admin.end_offsets(settings)
        small = _measure(settings, "small", work, small_ends)
        produce_keys(settings, keys, "l")
        all_ends = kafka_admin.end_offsets(settings)
        # The large run reads only the large input: it starts where the small one ended.
        large = _measure(settings, "large", work, all_ends, starts=small_ends)
    dk = keys - base_keys

    def per_key(field: str) -> int:
        return round((large[field] - small[field]) * 1024 * 1024 / dk)

    per_key_redis = (large["redis_bytes"] - small["redis_bytes"]) / dk
    return {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
        "keys": keys, "base_keys": base_keys, "small": small, "large": large,
        # A live dataflow's memory: the peak until the input was read. A bounded run (a replay, this
        # benchmark) also has an end of input, where Bytewax snapshots every key at once.
        "dataflow_bytes_per_key": per_key("input_read_peak_rss_mib"),
        "dataflow_bytes_per_key_with_end": per_key("peak_rss_mib"),
        "redis_bytes_per_key": round(per_key_redis),
        "target_dataflow_bytes_per_key": 1024,
        "reproduce": f"python -m loadtest.bench.memory --keys {keys} --base-keys {base_keys}",
    }


def markdown(r: dict[str, Any]) -> str:
    s, lg = r["small"], r["large"]
    per, target = r["dataflow_bytes_per_key"], r["target_dataflow_bytes_per_key"]
    return f"""# Memory per key

Finished {r['finished_at']}, {r['machine']['cpus']} CPUs, Python {r['machine']['python']}. The production
dataflow (1 worker, recovery on) read {r['base_keys']:,} keys and then, in a fresh process, {r['keys']:,} keys;
each key got a RECEIPT and a RESERVE. Per key = difference of the two runs / difference in keys.

| run | keys | records | seconds | peak RSS MiB, input read | peak RSS MiB, with the end of input | Redis bytes added |
|---|---|---|---|---|---|---|
| small | {r['base_keys']:,} | {s['records']:,} | {s['seconds']} | {s['input_read_peak_rss_mib']} | {s['peak_rss_mib']} | {s['redis_bytes']:,} |
| large | {r['keys']:,} | {lg['records']:,} | {lg['seconds']} | {lg['input_read_peak_rss_mib']} | {lg['peak_rss_mib']} | {lg['redis_bytes']:,} |

- Dataflow, live: **{per:,} bytes per key** (target ≤ {target:,}: {_verdict(per, target)}): the peak RSS
  until the whole input was read, which is what a running dataflow holds.
- Dataflow, with the end of input: **{r['dataflow_bytes_per_key_with_end']:,} bytes per key**
  ({_verdict(r['dataflow_bytes_per_key_with_end'], target)}). When a bounded input ends (a replay, this
  benchmark), Bytewax calls `on_eof` on every key and snapshots every key in one epoch; a live
  dataflow stops on SIGINT or SIGTERM without an end of input and never does this.
- Redis: **{r['redis_bytes_per_key']:,} bytes per key** (the position hash and the SKU's location set).

Reproduce: `{r['reproduce']}`
"""


def _verdict(per_key: int, target: int) -> str:
    return "met" if per_key <= target else f"missed by {per_key / target:.2f}×"


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--base-keys", type=int, default=20_000)
    ap.add_argument("--report-dir", type=Path, default=REPORT_DIR)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="atp-memory-") as tmp:
        report = run(a.keys, a.base_keys, Path(tmp))
    print(write_report(a.report_dir, "memory", report, markdown))
    print(f"dataflow {report['dataflow_bytes_per_key']:,} B/key, redis {report['redis_bytes_per_key']:,} B/key",
          file=sys.stderr)


if __name__ == "__main__":
    main()
