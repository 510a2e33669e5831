"""The skip list: input records the decode step turns into dead letters without decoding them.

It holds the records the crash-loop guard pinned (reason ``crash_loop``, see
``dataflows.runtime.crashguard`` and docs/crash-loop.md) and those an operator skips with ``atp dlq
skip`` (reason ``skipped``). The file (``skip-list.json`` in the state directory) is shared by every
generation there. It is empty in normal runs, and then the decode step pays one truth test per batch.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bytewax.connectors.kafka import KafkaError as SourceError

from core.errors import StackError
from dataflows import metrics

log = logging.getLogger(__name__)


CRASH_LOOP, SKIPPED = "crash_loop", "skipped"  # the reasons a record is on the skip list
SKIP_FILE = "skip-list.json"  # in the state dir


Where = tuple[str, int, int]  # topic, partition, offset


def source_of(where: Where) -> str:
    return f"{where[0]}:{where[1]}:{where[2]}"


def parse_where(text: str) -> Where | None:
    """``topic:partition:offset`` -> its parts, or None."""
    parts = text.rsplit(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return parts[0], int(parts[1]), int(parts[2])


@dataclass(frozen=True)
class Skip:
    reason: str  # crash_loop | skipped
    message: str
    added_ms: int = 0


def read_skips(path: Path) -> dict[str, Skip]:
    try:
        return {src: Skip(**entry) for src, entry in json.loads(path.read_text()).items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise StackError(f"the skip list {path} is unreadable ({exc}); repair it or delete it "
                         "(its records are then read, and processed, again)") from None


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def add_skip(path: Path, where: Where, reason: str, message: str) -> bool:
    """Put ``where`` on the skip list at ``path``; False if it was there already (the entry is kept)."""
    with _locked(path):
        skips = read_skips(path)
        src = source_of(where)
        if src in skips:
            return False
        skips[src] = Skip(reason, message, int(time.time() * 1000))
        _write_json(path, {k: asdict(v) for k, v in skips.items()})
        return True


class SkipList:
    """The records the decode step turns into dead letters unread, loaded from the skip file."""

    def __init__(self, entries: dict[Where, Skip] | None = None) -> None:
        self.entries: dict[Where, Skip] = entries or {}
        self._path: Path | None = None
        self._stamp: tuple[int, int] | None = None

    def __bool__(self) -> bool:
        return bool(self.entries)

    def load(self, path: Path) -> None:
        self._path, self._stamp = path, None
        self.refresh()

    def refresh(self) -> None:
        """Re-read the file if it changed (the watch thread calls this: a skip added while the
        dataflow runs applies to every record not read yet)."""
        if self._path is None:
            return
        try:
            st = self._path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return
        entries: dict[Where, Skip] = {}
        for src, skip in read_skips(self._path).items():
            where = parse_where(src)
            if where is not None:
                entries[where] = skip
        self.entries, self._stamp = entries, stamp  # one assignment: the decode step reads either
        if entries:
            log.info("skip list: %d record(s) are dead-lettered unread when the dataflow reaches them", len(entries))

    def divert(self, batch: list[Any], out: list[Any]) -> list[Any]:
        """Dead letters for the listed records of ``batch`` (into ``out``); returns the others."""
        from dataflows.kafka import DeadLetter

        keep = []
        entries = self.entries
        for msg in batch:
            skip = None if isinstance(msg, SourceError) else entries.get((msg.topic, msg.partition, msg.offset))
            if skip is None:
                keep.append(msg)
                continue
            metrics.EVENTS.inc((msg.topic, "unknown", "dead_letter"))
            metrics.DEAD_LETTER.labels(skip.reason).inc()
            log.warning("dead letter topic=%s partition=%s offset=%s key=%r reason=%s error=%s",
                        msg.topic, msg.partition, msg.offset, msg.key, skip.reason, skip.message)
            out.append(DeadLetter(msg, skip.reason, "CrashLoop" if skip.reason == CRASH_LOOP else "Skipped",
                                  skip.message))
        return keep


SKIP = SkipList()
