"""No record, however hostile, stops the stream: the skip list and the crash-loop guard.

A record that crashes the whole process (an ``os.abort()``, a segfault in native code, a
``BaseException`` no step catches) is read again after every restart, because the crash always
comes before the snapshot that would move past it. The guard breaks that loop (docs/crash-loop.md):

1. Every start of ``atp run`` writes a *running* marker into the crash ledger (the generation's
   directory, ``crash-ledger.json``); a clean end removes it. A marker found at start, with a Python error
   recorded or a fatal signal written down by ``faulthandler``, means the previous run crashed
   (one killed from outside, SIGKILL, is not counted): one crash is counted at the current resume position (the input offsets of
   the last committed snapshot). A crash at another resume position starts the count again.
2. From ``ATP_CRASH_LOOP_RESTARTS - 1`` crashes at the same position on, the run is *careful*: each
   input partition is read one record at a time, at most one record per ``CAREFUL_GAP_S`` for the
   whole process (so the previous one has gone through the flow), and the coordinates of each
   record are written to ``crash-careful.pos`` before Bytewax processes it.
3. When a careful run crashes, the next start puts the noted record on the skip list (reason
   ``crash_loop``), and the decode step turns it into a dead letter instead of decoding it.
4. Careful mode and the count end once the recovery store has committed every input partition up
   to where the log ended when the first crash at that position was counted.

The skip list (``skip-list.json`` in the state directory, shared by every generation there) also
holds the records an operator skips with ``atp dlq skip`` (reason ``skipped``). It is empty in
normal runs, and then the decode step pays one truth test per batch for it.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dataflows import metrics
from dataflows.kafka.careful import CAREFUL
from dataflows.runtime.storeread import RecoveryError
from dataflows.skiplist import CRASH_LOOP, Where, _write_json, add_skip, source_of

log = logging.getLogger(__name__)


LEDGER_FILE = "crash-ledger.json"  # in the generation dir


NOTE_FILE = "crash-careful.pos"  # in the generation dir: the record a careful run is about to process


FATAL_FILE = "crash-fatal.log"  # in the generation dir: what faulthandler wrote when the process died of a fatal signal




PIN_WINDOW_MS = 1500  # a careful crash is pinned on the noted record only if the process was alive this close to it




def read_note(path: Path) -> tuple[Where, int] | None:
    """The record a careful run noted last, and when (epoch ms)."""
    try:
        raw = path.read_bytes().strip()
        if not raw:
            return None
        topic, partition, offset, at_ms = json.loads(raw)
        return (str(topic), int(partition), int(offset)), int(at_ms)
    except (OSError, ValueError, TypeError):
        return None


@dataclass
class Ledger:
    resume: dict[str, int] = field(default_factory=dict)  # committed input offsets ({i}-{topic}) of the crashes
    crashes: int = 0  # crashes counted at that position
    until: dict[str, int] = field(default_factory=dict)  # the log's end offsets at the first one: past them, over
    pinned: list[str] = field(default_factory=list)  # records quarantined at that position
    running: dict[str, Any] | None = None  # the marker of a run in progress: pid, since_ms, alive_ms, careful

    @classmethod
    def load(cls, path: Path) -> Ledger:
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, TypeError) as exc:
            log.warning("the crash ledger %s is unreadable (%s); starting a new one", path, exc)
            return cls()

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_json(path, asdict(self))


# Any error of Redis (unreachable, READONLY, OOM, MISCONF, auth: none comes from a record, see
# dataflows.redis_sink), of Kafka or of the recovery store.
_INFRA = ("redis.exceptions.", "Redis unreachable", "KafkaException", "RecoveryError")


def is_infrastructure(exc: BaseException) -> bool:
    """An error of Redis, Kafka or the recovery store rather than of a record: not counted."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = f"{type(e).__module__}.{type(e).__name__}: {e}"
        if any(marker in text for marker in _INFRA):
            return True
        e = e.__cause__ or e.__context__
    return False


def now_ms() -> int:
    return int(time.time() * 1000)


class CrashGuard:
    """The crash ledger of one process's live run (single-process mode, recovery on)."""

    def __init__(self, directory: Path, skip_file: Path, restarts: int,
                 committed: Callable[[], dict[str, int]], unread: Callable[[dict[str, int]], dict[str, int]]) -> None:
        self._path, self._note = directory / LEDGER_FILE, directory / NOTE_FILE
        self._skip_file, self._restarts = skip_file, restarts
        self._committed, self._unread = committed, unread
        self._lock = threading.Lock()
        self._ledger = Ledger()
        self.recovering = False  # crashes counted at the current resume position, not past them yet
        self.careful = False

    @property
    def flow(self) -> str:
        return "crash_loop" if self.recovering else "running"

    def begin(self) -> None:
        """At start: count a crash of the previous run, quarantine what a careful run pinned, and
        decide whether this run is careful."""
        with self._lock:
            resume = self._committed()
            led = Ledger.load(self._path)
            if led.running is not None and not self._died_of_a_crash(led.running):
                log.info("the previous run of the dataflow ended without stopping cleanly but without a crash "
                         "(killed from outside: SIGKILL, the OOM killer, a power loss); not counted as a crash")
                led.running = None
            running = led.running
            if running is not None:
                if led.resume != resume or led.crashes == 0:
                    led = Ledger(resume=resume, crashes=0, until=self._unread(resume), running=running)
                led.crashes += 1
                log.warning("the previous run of the dataflow crashed: %d crash(es) at input position %s "
                            "(careful mode from %d on)", led.crashes, _short(resume), max(1, self._restarts - 1))
                if running.get("careful"):
                    self._pin(led, resume)
            elif led.resume != resume:
                led = Ledger()
            self.recovering = led.crashes > 0
            self.careful = self.recovering and led.crashes >= self._restarts - 1
            if self.careful:
                log.warning("crash loop: careful mode, reading one record at a time and noting each before it is "
                            "processed, until the input passes %s", _short(led.until))
            led.running = {"pid": os.getpid(), "since_ms": now_ms(), "alive_ms": now_ms(), "careful": self.careful}
            led.save(self._path)
            self._ledger = led
        CAREFUL.arm(self.careful, self._note)
        metrics.CRASHES.set(led.crashes)
        metrics.CAREFUL_MODE.set(1 if self.careful else 0)
        self._watch_fatal_signals()

    def _died_of_a_crash(self, running: dict[str, Any]) -> bool:
        """Whether the run that left ``running`` crashed: a Python error it recorded, or a fatal
        signal (SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL) that faulthandler wrote down. A process
        killed from outside (SIGKILL) writes neither, and its position moves on at the next
        snapshot: counting it would make two quick kills at one position look like a crash loop."""
        if running.get("error"):
            return True
        try:
            return bool((self._path.parent / FATAL_FILE).read_bytes().strip())
        except OSError:
            return False

    def _watch_fatal_signals(self) -> None:
        """Let faulthandler write the fatal signal and the threads' stacks of a crash of this run."""
        path = self._path.parent / FATAL_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        release_fatal_file()
        _FATAL[0] = path.open("w")  # emptied: only this run's crash counts at the next start
        faulthandler.enable(file=_FATAL[0], all_threads=True)

    def _pin(self, led: Ledger, resume: dict[str, int]) -> None:
        noted = read_note(self._note)
        if noted is None:
            log.warning("crash loop: the careful run crashed before it read a record; nothing to quarantine "
                        "(the crash does not come from one input record: see the log of that run)")
            return
        where, at_ms = noted
        alive = int(led.running.get("alive_ms", 0)) if led.running else 0
        src = source_of(where)
        if where[2] < resume.get(f"{where[1]}-{where[0]}", 0):
            return  # committed: processed without a crash
        if at_ms < alive - PIN_WINDOW_MS:
            log.warning("crash loop: the careful run crashed %.1f s after its last record %s; not quarantining it "
                        "(the crash does not follow a record)", (alive - at_ms) / 1000, src)
            return
        if len(led.pinned) >= max(self._restarts, 1):
            log.error("crash loop: %d records were quarantined at input position %s and it still crashes; not "
                      "quarantining more: fix the cause, or skip a record with `atp dlq skip`", len(led.pinned),
                      _short(resume))
            return
        message = ("crash loop: the dataflow process crashed on this record, read alone in careful mode after "
                   "repeated crashes; quarantined unread. Fix the cause, then redrive it")
        add_skip(self._skip_file, where, CRASH_LOOP, message)
        led.pinned.append(src)
        # The crash is found: careful mode now ends once that record is committed, not the whole range.
        led.until = {f"{where[1]}-{where[0]}": where[2] + 1}
        self._note.write_bytes(b"")
        log.warning("crash loop: quarantined %s after %d crashes at input position %s: the next read of it goes to "
                    "the dead-letter topic with reason crash_loop (`atp dlq show %s`)", src, led.crashes,
                    _short(resume), src)

    def tick(self) -> None:
        """From the watch thread: keep the careful run's sign of life, and end the recovery once the
        committed input is past where the log ended at the first crash."""
        if not self.recovering:
            return
        try:  # a child process (dataflows.runtime.storeread): outside the lock, which `crashed` takes
            committed: dict[str, int] | None = self._committed()
        except RecoveryError as exc:
            log.warning("crash guard: %s; the end of the recovery waits for the next check", exc)
            committed = None
        with self._lock:
            if not self.recovering:
                return
            led = self._ledger
            if committed is not None and all(committed.get(p, -1) >= end for p, end in led.until.items()):
                log.info("past the crash position%s: %d crash(es) there, %d record(s) quarantined; reading normally",
                         " (careful mode ends)" if self.careful else "", led.crashes, len(led.pinned))
                self.recovering = self.careful = False
                CAREFUL.arm(False)
                metrics.CRASHES.set(0)
                metrics.CAREFUL_MODE.set(0)
                self._ledger = Ledger(running=led.running)
                if self._ledger.running is not None:
                    self._ledger.running["careful"] = False
            elif self.careful and led.running is not None:
                led.running["alive_ms"] = now_ms()
            else:
                return
            self._ledger.save(self._path)

    def crashed(self, exc: BaseException) -> bool:
        """A Python exception ended the run: keep the marker (the next start counts it) unless the
        error was Redis's, Kafka's or the recovery store's. Returns whether it counts."""
        with self._lock:
            led = self._ledger
            if is_infrastructure(exc):
                led.running = None
                led.save(self._path)
                return False
            if led.running is not None:
                led.running["alive_ms"] = now_ms()
                led.running["error"] = type(exc).__name__
                led.save(self._path)
            self.recovering = True
            return True

    def end(self) -> None:
        """A clean end (stopped, retired, keyspace lost): no crash to count."""
        CAREFUL.arm(False)
        with self._lock:
            self._ledger.running = None
            self._ledger.save(self._path)


_FATAL: list[Any] = [None]  # the file faulthandler writes to (it is process-wide: one for the process)


def release_fatal_file() -> None:
    """Close the file faulthandler writes to (faulthandler then writes nowhere until enabled again)."""
    if _FATAL[0] is not None:
        faulthandler.disable()
        _FATAL[0].close()
        _FATAL[0] = None


def unread(resume: dict[str, int], ends: dict[str, int], lows: dict[tuple[str, int], int]) -> dict[str, int]:
    """The input partitions (``{i}-{topic}``) with records after ``resume``, and their end offsets.
    A partition never read resumes at -2 (Kafka's "beginning"): there, the first retained offset."""
    out = {}
    for part, end in ends.items():
        index, topic = part.split("-", 1)
        start = resume.get(part, -2)
        if start < 0:
            start = lows.get((topic, int(index)), 0)
        if end > start:
            out[part] = end
    return out


def _short(offsets: dict[str, int]) -> str:
    """Offsets for a log line: the partitions read (a never-read one resumes at -2)."""
    return "{" + ", ".join(f"{k}: {v}" for k, v in sorted(offsets.items()) if v >= 0) + "}"
