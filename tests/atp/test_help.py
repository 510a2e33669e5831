"""`--help` read through a pipe (a pager, a CI log) shows every option name and its help whole."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sandbox.child import ROOT


def help_of(*command: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH", "LINES")}
    out = subprocess.run([sys.executable, "-m", "atp", *command, "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={**base, **env})  # stdout is a pipe, not a terminal
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("command, whole", [
    (("dlq",), ["list", "show", "skip", "redrive", "--help"]),
    (("replay",), ["--allow-truncated", "--no-allow-truncated", "--metrics-port", "--dry-run", "--no-dry-run",
                   "topic:partition=offset to start a partition at", "ATP_FORMULA_VERSION"]),
    (("keys", "create"), ["--scope", "--locations", "--groups", "--rate", "--burst", "--expires",
                          "availability:read, drift:read, metrics:read or admin", "ATP_API_DEFAULT_RATE"]),
])
def test_help_in_a_pipe_is_not_cut(command, whole):
    text = help_of(*command)
    assert "…" not in text, text
    missing = [w for w in whole if w not in " ".join(text.split())]
    assert not missing, f"{missing} not whole in:\n{text}"


def test_columns_still_sets_the_width():
    narrow = help_of("replay", COLUMNS="100")
    assert max(len(line) for line in narrow.splitlines()) <= 100
    assert "--no-allow-truncated" in narrow
