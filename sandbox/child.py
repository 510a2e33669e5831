"""A child ``python -m atp <command>`` (dataflow or API) with its output in a log file.

Used by the chaos harness and the integration tests alike.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from core.config import Settings, child_environ

ROOT = Path(__file__).resolve().parents[1]


class Child:
    def __init__(self, args: list[str], settings: Settings, log: Path) -> None:
        self.args, self.settings, self.log = args, settings, log
        self.p: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Child:
        with self.log.open("ab") as fh:  # the child keeps its own copy of the descriptor
            self.p = subprocess.Popen([sys.executable, "-m", "atp", *self.args], cwd=ROOT, stdout=fh,
                                      stderr=subprocess.STDOUT, env=child_environ(self.settings, os.environ))
        self.starts += 1
        return self

    def alive(self) -> bool:
        return self.p is not None and self.p.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int | None:
        """Send ``sig`` (waking a stopped process first), wait, kill -9 after ``timeout_s``."""
        if self.alive():
            p = self.p
            assert p is not None
            if sig != signal.SIGKILL:
                p.send_signal(signal.SIGCONT)
            p.send_signal(sig)
            try:
                p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return self.p.returncode if self.p is not None else None

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""
