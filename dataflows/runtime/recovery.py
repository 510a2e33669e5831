"""The dataflow's recovery store: Bytewax's SQLite partitions, stamped with the run they belong to.

Bytewax resumes from whatever partitions it finds. We add one table, ``atp_run``, to each
partition, so that a damaged file, a missing partition or partitions of two different runs are
refused at start instead of silently resuming from a mix (or from nothing).
"""

from __future__ import annotations

import logging
import pickle
import sqlite3
import uuid
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from bytewax.recovery import init_db_dir

from core.errors import StackError

log = logging.getLogger(__name__)

SOURCE_STEP = "atp.kafka_in"  # flow id + step id: where Bytewax keeps the input offsets
FOLD_STEP = "atp.atp_fold"  # ... and the per-key fold state


class RecoveryError(StackError):
    """The recovery store cannot be trusted; the message says why and what to do."""


def _connect(path: Path, write: bool = False) -> sqlite3.Connection:
    mode = "rw" if write else "ro"
    return sqlite3.connect(f"file:{path}?mode={mode}", uri=True, timeout=10)


@dataclass(frozen=True)
class RecoveryStore:
    directory: Path

    def partitions(self) -> list[Path]:
        return sorted(self.directory.glob("part-*.sqlite3"))

    def exists(self) -> bool:
        return bool(self.partitions())

    def create(self, count: int) -> str:
        """New partitions for a new run; returns its run id."""
        self.directory.mkdir(parents=True, exist_ok=True)
        init_db_dir(self.directory, count)
        run_id = uuid.uuid4().hex
        for path in self.partitions():
            self._stamp(path, run_id)
        log.info("created %d recovery partitions for run %s in %s", count, run_id, self.directory)
        return run_id

    def validate(self) -> str:
        """The run id every partition agrees on, or ``RecoveryError`` saying what is wrong."""
        fix = (f"Restore {self.directory} from a backup, or start over with `atp reset` (which also clears "
               "the Redis keyspace, so the next run rebuilds it from the beginning of the topics).")
        parts: dict[int, tuple[Path, int, str | None]] = {}
        for path in self.partitions():
            try:
                with closing(_connect(path)) as db:
                    if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                        raise sqlite3.DatabaseError("integrity check failed")
                    index, count = db.execute("SELECT part_index, part_count FROM parts").fetchone()
                    has_run = db.execute(
                        "SELECT count(*) FROM sqlite_master WHERE name = 'atp_run'").fetchone()[0]
                    run = db.execute("SELECT run_id FROM atp_run").fetchone()[0] if has_run else None
            except (sqlite3.DatabaseError, TypeError) as exc:
                raise RecoveryError(f"recovery partition {path} is damaged ({exc}). {fix}") from None
            parts[index] = (path, count, run)
        counts = {count for _, count, _ in parts.values()}
        if len(counts) != 1:
            raise RecoveryError(f"recovery partitions in {self.directory} disagree on their count {sorted(counts)}. {fix}")
        count = counts.pop()
        missing = sorted(set(range(count)) - set(parts))
        if missing:
            raise RecoveryError(
                f"recovery partition(s) {', '.join(map(str, missing))} of {count} are missing from {self.directory}. {fix}")
        runs = {run for _, _, run in parts.values()}
        if len(runs) != 1:
            names = ", ".join(f"{p.name}: {r or 'none'}" for p, _, r in parts.values())
            raise RecoveryError(f"recovery partitions in {self.directory} come from different runs ({names}). {fix}")
        run_id = runs.pop()
        if run_id is None:  # written before partitions were stamped: adopt them as one run
            run_id = uuid.uuid4().hex
            for path, _, _ in parts.values():
                self._stamp(path, run_id)
            log.warning("recovery partitions in %s carried no run id; stamped them as run %s", self.directory, run_id)
        return run_id

    def committed_offsets(self) -> tuple[int, dict[str, int]]:
        """The resume epoch and, per input partition (``{index}-{topic}``), the next offset to read."""
        resume, latest = self._committed(SOURCE_STEP)
        return resume, {key: pickle.loads(blob) for key, blob in latest.items()}

    def state_keys(self, step: str = FOLD_STEP) -> int:
        """How many keys a resume of ``step`` builds (those with state at the resume epoch)."""
        return len(self._committed(step)[1])

    def _committed(self, step: str) -> tuple[int, dict[str, bytes]]:
        epochs: list[int] = []
        rows: list[tuple[str, int, bytes | None]] = []
        for path in self.partitions():
            with closing(_connect(path)) as db:
                epochs += [e for (e,) in db.execute("SELECT commit_epoch FROM commits")]
                rows += db.execute(
                    "SELECT state_key, snap_epoch, ser_change FROM snaps WHERE step_id = ?", (step,)).fetchall()
        resume = min(epochs) if epochs else 0
        latest: dict[str, tuple[int, bytes | None]] = {}
        for key, epoch, blob in rows:
            if epoch <= resume and (key not in latest or epoch > latest[key][0]):
                latest[key] = (epoch, blob)
        return resume, {key: blob for key, (_, blob) in latest.items() if blob is not None}

    @staticmethod
    def _stamp(path: Path, run_id: str) -> None:
        with closing(_connect(path, write=True)) as db, db:
            db.execute("CREATE TABLE IF NOT EXISTS atp_run (run_id TEXT NOT NULL)")
            db.execute("DELETE FROM atp_run")
            db.execute("INSERT INTO atp_run (run_id) VALUES (?)", (run_id,))
