"""What the benchmarks share: their options, a private stack with a seeded input, a measured child
process, and the report files."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import Settings, load_settings
from dataflows.kafka import admin as kafka_admin
from dataflows.kafka.producer import EventProducer
from sandbox.child import ROOT
from sandbox.pace import SendResult, send_paced
from sandbox.simulator import Simulator
from sandbox.stack import Stack, free_port

REPORT_DIR = Path(__file__).resolve().parents[1] / "reports"
_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_of(pid: int | None) -> float:
    """CPU seconds (user + system) of a process and its descendants, live or reaped; 0 if gone."""
    if pid is None:
        return 0.0
    try:
        f = _stat(pid)
    except (OSError, IndexError):
        return 0.0
    own = sum(int(x) for x in f[11:15]) / _TICK  # utime, stime, cutime, cstime
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat(int(entry.name))[1]) == pid:
                    children.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return own + sum(cpu_of(c) for c in children)


def parser(doc: str, runs: bool = True) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    if runs:
        ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skus", type=int, default=5_000)
    ap.add_argument("--locations", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--report-dir", type=Path, default=REPORT_DIR)
    return ap


@contextmanager
def private_stack(work_dir: Path, **overrides: Any) -> Iterator[tuple[Settings, Stack]]:
    """A broker and Redis on free loopback ports, stopped afterwards whatever happens."""
    settings = load_settings({}, state_dir=work_dir / "state", api_auth="disabled", kafka_bootstrap=f"127.0.0.1:{free_port()}",
                             redis_url=f"redis://127.0.0.1:{free_port()}/0", metrics_port=0, **overrides)
    stack = Stack(settings)
    try:
        stack.up()
        yield settings, stack
    finally:
        stack.down()


def produce(settings: Settings, events: int, skus: int, locations: int, seed: int) -> SendResult:
    sent = send_paced(Simulator(seed, skus, locations), EventProducer(settings), 0, events)
    print(f"produced {sent.sent:,} events in {sent.seconds:.1f} s", file=sys.stderr)
    return sent


@dataclass(frozen=True)
class Measured:
    exit_code: int
    wall_s: float
    cpu_s: float  # user + system of the child
    peak_rss_mib: float  # ru_maxrss: an upper bound (see own_peak_rss_mib); children report their own
    stdout: str
    stderr: str


def write_ends(settings: Settings, work_dir: Path) -> tuple[dict[str, int], Path]:
    """The input topics' end offsets now (``{index}-{topic}`` -> offset), and ``ends.json`` in
    ``work_dir`` holding them: the bounded input every benchmark process reads."""
    ends = kafka_admin.end_offsets(settings)
    path = work_dir / "ends.json"
    path.write_text(json.dumps(ends))
    return ends, path


def measure(args: Sequence[str], env: dict[str, str], log_dir: Path, name: str) -> Measured:
    """Run ``python -m <args>`` from the project root; its output goes to files (no pipe to fill)."""
    return measure_together([(args, env, name)], log_dir)[0]


def measure_together(runs: Sequence[tuple[Sequence[str], dict[str, str], str]], log_dir: Path) -> list[Measured]:
    """``measure`` for processes that run at the same time (the processes of a cluster): all are
    started, then each is reaped; ``wall_s`` is from the first start to that process's exit."""
    started = time.perf_counter()
    procs = []
    for args, env, name in runs:
        out, err = log_dir / f"{name}.out", log_dir / f"{name}.err"
        with out.open("wb") as o, err.open("wb") as e:
            procs.append((subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, stdout=o, stderr=e, env=env),
                          out, err))
    results = []
    for p, out, err in procs:
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
        results.append(Measured(p.returncode, time.perf_counter() - started, usage.ru_utime + usage.ru_stime,
                                usage.ru_maxrss / 1024, out.read_text(errors="replace"),
                                err.read_text(errors="replace")))
    return results


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend, or None (said once on stderr) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot", file=sys.stderr)
        return None
    return plt


def bar_chart(path: Path, labels: list[str], values: list[int], xlabel: str, title: str,
              target: tuple[float, str] | None = None, height: float = 3.6) -> bool:
    """A horizontal bar per label, top to bottom in the given order, each with its value written."""
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(8, height))
    bars = ax.barh(labels[::-1], values[::-1], color="#4C72B0")
    ax.bar_label(bars, labels=[f"{v:,}" for v in values[::-1]], padding=3, fontsize=8)
    if target is not None:
        ax.axvline(target[0], color="#C44E52", linestyle="--", linewidth=1, label=target[1])
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.set_xlim(0, max(values) * 1.18)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(directory: Path, name: str, report: dict[str, Any], markdown: Callable[[dict[str, Any]], str]) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (directory / f"{name}.md").write_text(text)
    return text
