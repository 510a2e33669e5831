"""The dataflow's recovery store: Bytewax's SQLite partitions, stamped with the run they belong to.

Bytewax resumes from whatever partitions it finds. We add one table, ``atp_run``, to each
partition, so that a damaged file, a missing partition or partitions of two different runs are
refused at start instead of silently resuming from a mix (or from nothing).

This process's own SQLite opens the partitions only before Bytewax does (``validate``, the run
stamp); what Bytewax committed is read in a child process (``dataflows.runtime.storeread`` says why).
"""

from __future__ import annotations

import logging
import sqlite3
import uuid
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from bytewax.recovery import init_db_dir

from dataflows.runtime.storeread import RecoveryError as RecoveryError
from dataflows.runtime.storeread import connect, read
from dataflows.runtime.storeread import partitions as _partitions

log = logging.getLogger(__name__)

SOURCE_STEP = "atp.kafka_in"  # flow id + step id: where Bytewax keeps the input offsets
FOLD_STEP = "atp.atp_fold"  # ... and the per-key fold state


@dataclass(frozen=True)
class RecoveryStore:
    directory: Path

    def partitions(self) -> list[Path]:
        return _partitions(self.directory)

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
                with closing(connect(path)) as db:
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
        """The resume epoch and, per input partition (``{index}-{topic}``), the next offset to read.
        Read in a child process (``storeread``): safe while Bytewax runs in this one."""
        out = read(self.directory, SOURCE_STEP, "offsets")
        return int(out["resume"]), {key: int(value) for key, value in out["offsets"].items()}

    def state_keys(self, step: str = FOLD_STEP) -> int:
        """How many keys a resume of ``step`` builds (those with state at the resume epoch)."""
        return int(read(self.directory, step, "keys")["keys"])

    @staticmethod
    def _stamp(path: Path, run_id: str) -> None:
        with closing(connect(path, write=True)) as db, db:
            db.execute("CREATE TABLE IF NOT EXISTS atp_run (run_id TEXT NOT NULL)")
            db.execute("DELETE FROM atp_run")
            db.execute("INSERT INTO atp_run (run_id) VALUES (?)", (run_id,))
