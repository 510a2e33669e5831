"""Careful reading: one record at a time, each noted on disk before the flow sees it.

The crash-loop guard (``dataflows.runtime.crashguard``, docs/crash-loop.md) turns this on after
repeated crashes at one input position, so that the record that kills the process can be named.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from dataflows.kafka import Consumed, consume

CAREFUL_GAP_S = 0.002  # a careful run emits at most one record per this, over every partition of the process


CAREFUL_STEPS = 30  # ... and only after this many worker steps (more than the flow has operators)


CAREFUL_MAX_WAIT_S = 0.5  # ... or this long, if the partition that emitted last is not polled any more


NOTE_SIZE = 512  # bytes of the note, rewritten in place


class Careful:
    """While ``on``: the live source reads one record at a time and notes it before emitting it
    (``kafka_io.LivePartition``)."""

    def __init__(self) -> None:
        self.on = False
        self._lock = threading.Lock()
        self._next = 0.0
        self._last: Any = None  # the consumer of the partition that emitted the last record
        self._polls = CAREFUL_STEPS  # its polls since
        self._fd: int | None = None

    def arm(self, on: bool, note: Path | None = None) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if on and note is not None:
                note.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(note, os.O_RDWR | os.O_CREAT, 0o644)
                os.ftruncate(self._fd, 0)
            self.on = on

    def consume(self, consumer: Consumer) -> list[Consumed]:
        """The live source's read in careful mode: at most one record of a partition, and only once the
        process's previous one had time to go through the whole flow; noted before it is returned.

        "Time" is worker steps: Bytewax polls a partition at most once per step, so ``CAREFUL_STEPS``
        polls of the partition that emitted last (each partition has its own consumer) mean at least
        as many steps, enough for one record to pass every operator of the flow. A wall-clock
        ceiling keeps a partition that is no longer polled from stopping the rest."""
        with self._lock:
            now = time.monotonic()
            if consumer is self._last:
                self._polls += 1
            if now < self._next or (self._polls < CAREFUL_STEPS and now < self._next + CAREFUL_MAX_WAIT_S):
                return []
            msgs = consume(consumer, 1, 0.001)
            for m in msgs:
                if m.error() is None:
                    self._note(m.topic(), m.partition(), m.offset())
                    self._next, self._last, self._polls = now + CAREFUL_GAP_S, consumer, 0
            return msgs

    def _note(self, topic: str, partition: int, offset: int) -> None:
        if self._fd is None:
            return
        line = json.dumps([topic, partition, offset, int(time.time() * 1000)]).encode()
        # One write of a fixed size at offset 0: a crash right after it still leaves it in the file.
        os.pwrite(self._fd, line.ljust(NOTE_SIZE), 0)


CAREFUL = Careful()
