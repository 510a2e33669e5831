"""Reads of Bytewax's recovery store, each in a short-lived process of its own.

Bytewax links its own copy of SQLite; Python's ``sqlite3`` is another. Two copies in one process do
not share their POSIX locks, and the kernel drops every lock a process holds on a file when *any*
descriptor of it is closed: each time Python closed a connection to a partition, Bytewax's locks
went with it, the next connection took the WAL index (``-shm``) for abandoned and truncated it under
Bytewax's mapping, and the dataflow died of SIGBUS (a careful run of the crash-loop guard, which
checks the committed offsets every half second, then pinned the crash on an innocent record).
SQLite names the cause: https://www.sqlite.org/howtocorrupt.html, 2.2.1 "Multiple copies of SQLite
linked into the same application". So the dataflow's process opens the store with Python's SQLite
only before Bytewax starts (``RecoveryStore.validate``, the run stamp); every read of what Bytewax
committed (``read``) runs here, in a child process, whose locks are its own.

Run as ``python -m dataflows.runtime.storeread DIRECTORY STEP offsets|keys``: one JSON line out.
"""

from __future__ import annotations

import json
import pickle
import sqlite3
import subprocess
import sys
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

from core.errors import StackError

ROOT = Path(__file__).resolve().parents[2]  # where ``-m dataflows...`` imports from

READ_TIMEOUT_S = 60.0  # a stalled disk, not a busy store: readers of a WAL store do not wait on its writer


DAMAGED = 3  # the child's exit code when SQLite says a partition is not a database or is corrupt


class RecoveryError(StackError):
    """The recovery store cannot be trusted; the message says why and what to do."""


def connect(path: Path, write: bool = False) -> sqlite3.Connection:
    """A connection of *this* process's SQLite: never while Bytewax has the store open here."""
    mode = "rw" if write else "ro"
    return sqlite3.connect(f"file:{path}?mode={mode}", uri=True, timeout=10)


def partitions(directory: Path) -> list[Path]:
    return sorted(directory.glob("part-*.sqlite3"))


def committed(directory: Path, step: str) -> tuple[int, dict[str, bytes]]:
    """The resume epoch (the lowest committed over the partitions) and, per state key of ``step``,
    its serialized state at that epoch (keys deleted by then left out). In-process: the child's body."""
    epochs: list[int] = []
    rows: list[tuple[str, int, bytes | None]] = []
    with ExitStack() as stack:
        # One read transaction per partition, all begun before any snapshot is read: Bytewax deletes
        # snapshots a newer commit supersedes, and a key read after that commit would be missing.
        dbs = [stack.enter_context(closing(connect(path))) for path in partitions(directory)]
        for db in dbs:
            db.execute("BEGIN")
            epochs += [e for (e,) in db.execute("SELECT commit_epoch FROM commits")]
        for db in dbs:
            rows += db.execute(
                "SELECT state_key, snap_epoch, ser_change FROM snaps WHERE step_id = ?", (step,)).fetchall()
            db.execute("COMMIT")
    resume = min(epochs) if epochs else 0
    latest: dict[str, tuple[int, bytes | None]] = {}
    for key, epoch, blob in rows:
        if epoch <= resume and (key not in latest or epoch > latest[key][0]):
            latest[key] = (epoch, blob)
    return resume, {key: blob for key, (_, blob) in latest.items() if blob is not None}


def read(directory: Path, step: str, what: str) -> dict[str, Any]:
    """``{"resume": epoch, "offsets": {key: value}}`` (``what="offsets"``: each state unpickled) or
    ``{"resume": epoch, "keys": count}`` (``what="keys"``), read in a child process."""
    argv = [sys.executable, "-m", __name__, str(directory), step, what]
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=READ_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise RecoveryError(f"reading the recovery store {directory} took over {READ_TIMEOUT_S:.0f} s; "
                            "is its disk stalled?") from None
    except OSError as exc:
        raise RecoveryError(f"cannot start a process to read the recovery store {directory}: {exc}") from None
    lines = done.stderr.decode(errors="replace").strip().splitlines()
    why = lines[-1] if lines else f"exit code {done.returncode}"
    if done.returncode == DAMAGED:
        raise RecoveryError(f"the recovery store {directory} is damaged ({why}): restore it from a backup, or "
                            "start over with `atp reset`")
    if done.returncode != 0:
        raise RecoveryError(f"cannot read the recovery store {directory} ({why})")
    try:
        out: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        raise RecoveryError(f"reading the recovery store {directory} gave no answer ({why})") from None
    return out


def _main(argv: list[str]) -> int:
    directory, step, what = argv
    resume, latest = committed(Path(directory), step)
    if what == "offsets":
        out: dict[str, Any] = {"resume": resume, "offsets": {k: pickle.loads(b) for k, b in latest.items()}}
    elif what == "keys":
        out = {"resume": resume, "keys": len(latest)}
    else:
        sys.stderr.write(f"unknown read {what!r}: offsets or keys\n")
        return 2
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(_main(sys.argv[1:]))
    except sqlite3.DatabaseError as exc:
        sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
        damaged = not isinstance(exc, sqlite3.OperationalError)  # "database is locked" is not damage
        sys.exit(DAMAGED if damaged else 1)
