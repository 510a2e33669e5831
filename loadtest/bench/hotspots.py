"""Where a ladder rung's time goes: the rung run once under py-spy, its samples grouped by step.

The ladder says how fast each rung is; this says why the full pipeline is not faster. The rung
(``full`` by default: recovery on, the default deployment) reads a pre-produced input under
``py-spy record``; each sample's stack is put under the first step it passes through (the table in
``STEPS``), and a step's share of the samples times the rung's CPU per record gives its cost in
microseconds per record. Samples under the rung's Bytewax entry with no Python frame below it are
Bytewax's own Rust (routing, the recovery store, the operators' bookkeeping). Writes
``loadtest/reports/hotspots.{json,md,png}``.

    python -m loadtest.bench.hotspots --events 300000

py-spy (in the ``bench`` extra) starts the rung as its own child, which the default ptrace policy
allows without root. Sampling pauses the rung briefly, so its records/s is not a ladder figure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.config import child_environ
from loadtest.bench.ladder_stage import STAGES
from loadtest.common.harness import bar_chart, parser, private_stack, produce, write_ends, write_report
from loadtest.common.machine import machine
from sandbox.child import ROOT

# (step, substrings of a frame "function (file:line)"): a sample goes to the first step, in this
# order, with a frame containing one of them. Packing comes first: it runs inside the fold's calls.
STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("state packing (snapshots, unpacking)", ("PositionLogic.snapshot (", "PositionLogic._unpack (")),
    ("decode and validation", ("DecodeStep.__call__ (",)),
    ("the ATP fold", ("dataflows/logic.py:",)),
    ("Avro encoding of the outputs", ("RecordMessage.__call__ (", "FeedMessage.__call__ (", "DeadLetterMessage.__call__ (")),
    ("Redis writes", ("dataflows/redis_sink.py:",)),
    ("Kafka producer", ("_KafkaSinkPartition.write_batch (", "dataflows/kafka/sink.py:")),
    ("Kafka source (message objects)", ("next_batch (",)),
    ("controls directory and groups", ("dataflows/controls.py:", "dataflows/groups.py:")),
    ("location demand windows", ("dataflows/location_demand.py:", "bytewax/operators/windowing.py:")),
    ("heap trimming (own thread)", ("core/memtrim.py:",)),
)
RUNTIME = "Bytewax runtime (Rust)"
OTHER = "other Python in the dataflow"
OUTSIDE = "start-up and other threads"
_ENTRY = "run (loadtest/bench/ladder_stage.py:"  # the rung's call into Bytewax


def read_folded(path: Path) -> Counter[str]:
    """py-spy's ``--format raw`` output: one ``frame;frame;... count`` line per distinct stack."""
    stacks: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    return stacks


def step_of(stack: str) -> str:
    frames = stack.split(";")
    for step, marks in STEPS:
        if any(mark in frame for frame in frames for mark in marks):
            return step
    entry = next((i for i, f in enumerate(frames) if _ENTRY in f), None)
    if entry is None:
        return OUTSIDE
    return OTHER if any(".py:" in f for f in frames[entry + 1:]) else RUNTIME


def leaf_of(stack: str) -> str:
    """The innermost Python frame (its function and file), where a sample's time was spent."""
    python = [f for f in stack.split(";") if ".py:" in f]
    if not python:
        return "(native)"
    func, _, where = python[-1].partition(" (")
    return f"{func} ({where.rsplit(':', 1)[0]})"


def is_wait(stack: str) -> bool:
    """A thread blocked in a ``threading`` wait (the heap trimmer between trims): py-spy does not
    always see those as idle, and they use no CPU."""
    func, _, where = leaf_of(stack).partition(" (")
    return func in _WAITS and where.rstrip(")").endswith("threading.py")


_WAITS = frozenset({"Condition.wait", "Event.wait", "Thread.join", "Thread._wait_for_tstate_lock"})


def attribute(stacks: Counter[str], records: int, cpu_s: float) -> dict[str, Any]:
    waits = sum(n for stack, n in stacks.items() if is_wait(stack))
    total = sum(stacks.values()) - waits
    if total <= 0 or records <= 0:
        raise ValueError("no samples or no records: the profile is empty")
    by_step: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for stack, n in stacks.items():
        if not is_wait(stack):
            by_step[step_of(stack)] += n
            leaves[leaf_of(stack)] += n
    per_record = cpu_s * 1e6 / records

    def row(name: str, n: int) -> dict[str, Any]:
        return {"name": name, "samples": n, "share": round(n / total, 4), "us_per_record": round(per_record * n / total, 2)}

    return {
        "samples": total, "wait_samples_left_out": waits, "records": records, "cpu_s": round(cpu_s, 2), "us_per_record": round(per_record, 2),
        "steps": [row(name, n) for name, n in by_step.most_common()],
        "functions": [row(name, n) for name, n in leaves.most_common(15)],
    }


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: pip install -e '.[bench]'")
    return found


def run(events: int, skus: int, locations: int, seed: int, work_dir: Path, stage: str = "full",
        rate: int = 250, native: bool = False) -> dict[str, Any]:
    if stage not in STAGES[2:]:
        raise SystemExit(f"--stage must be a dataflow rung: {', '.join(STAGES[2:])}")
    spy = py_spy()
    with private_stack(work_dir) as (settings, _):
        sent = produce(settings, events, skus, locations, seed)
        ends, ends_file = write_ends(settings, work_dir)
        raw = work_dir / "samples.txt"
        s = settings.model_copy(update={"state_dir": settings.state_dir / stage, "redis_key_prefix": f"hotspots-{stage}"})
        cmd = [spy, "record", "--format", "raw", "--rate", str(rate), "--output", str(raw), *(["--native"] * native),
               "--", sys.executable, "-m", "loadtest.bench.ladder_stage", stage, str(ends_file)]
        print(f"profiling the {stage} rung: {sum(ends.values()):,} records", file=sys.stderr)
        done = subprocess.run(cmd, env=child_environ(s, os.environ), cwd=ROOT, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines or not raw.exists():
        raise RuntimeError(f"py-spy or the {stage} rung failed (exit {done.returncode}); py-spy needs to trace "
                           f"its child (kernel.yama.ptrace_scope <= 1):\n{done.stdout[-1500:]}\n{done.stderr[-1500:]}")
    result = json.loads(lines[-1])
    profile = attribute(read_folded(raw), result["records"], result["cpu_s"])
    return {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
        "stage": stage, "input": {"events": sent.sent, "records": sum(ends.values()), "skus": skus,
                                  "locations": locations, "seed": seed, "partitions": len(ends)},
        "sampling": {"rate_hz": rate, "native": native}, **profile,
        "reproduce": f"python -m loadtest.bench.hotspots --events {events} --stage {stage} --skus {skus} "
                     f"--locations {locations} --seed {seed}",
    }


def markdown(r: dict[str, Any]) -> str:
    i = r["input"]
    steps = "\n".join(f"| {x['name']} | {x['share']:.1%} | {x['us_per_record']:.1f} |" for x in r["steps"])
    funcs = "\n".join(f"| `{x['name']}` | {x['share']:.1%} | {x['us_per_record']:.1f} |" for x in r["functions"])
    return f"""# Where the time goes: the {r['stage']} rung, sampled

Finished {r['finished_at']}, {r['machine']['cpus']} CPUs, Python {r['machine']['python']}; embedded broker
and Redis on loopback. Input: {i['events']:,} simulated events ({i['records']:,} records, {i['skus']:,} SKUs ×
{i['locations']} locations, seed {i['seed']}, {i['partitions']} partitions). The rung ran once under
`py-spy record` at {r['sampling']['rate_hz']} Hz ({r['samples']:,} samples of running threads; {r['wait_samples_left_out']:,} of
threads blocked in a `threading` wait were left out): it used
{r['cpu_s']:.1f} s of CPU, **{r['us_per_record']:.1f} µs per record**. A step's cost is its share of the
samples times that.

| step | share of samples | µs per record |
|---|---|---|
{steps}

Innermost Python function of each sample (its own time), the top 15:

| function | share | µs per record |
|---|---|---|
{funcs}

![µs per record per step](hotspots.png)

Reproduce: `{r['reproduce']}`
"""


def plot(r: dict[str, Any], path: Path) -> bool:
    return bar_chart(path, [x["name"] for x in r["steps"]], [round(x["us_per_record"], 1) for x in r["steps"]],
                     "µs of CPU per record", f"Where the {r['stage']} rung's time goes: "
                     f"{r['us_per_record']:.1f} µs per record (50,000/s on one core: 20)", height=4.2)


def main() -> None:
    ap = parser(__doc__ or "", runs=False)
    ap.set_defaults(events=300_000)
    ap.add_argument("--stage", default="full", help=f"the rung to profile: {', '.join(STAGES[2:])}")
    ap.add_argument("--rate", type=int, default=250, help="samples per second")
    ap.add_argument("--native", action="store_true", help="also sample native frames (slower)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="atp-hotspots-") as tmp:
        report = run(a.events, a.skus, a.locations, a.seed, Path(tmp), a.stage, a.rate, a.native)
    text = write_report(a.report_dir, "hotspots", report, markdown)
    plot(report, a.report_dir / "hotspots.png")
    print(text)


if __name__ == "__main__":
    main()
