"""How far the wms topic has been read, in event time: for deciding when a snapshot's past is in.

A snapshot arrives on its own topic, at its own pace: during a replay or after an outage it can
be read long before the stock changes that precede it. It is compared with the stream once the
wms partitions read by this process have all passed its ``as_of`` (or its key's own stock
changes have, or a timeout ran out). Process-wide, fed by the decode step (event times) and by the
wms partitions of the source (the end of the log reached, or read past again).

A partition at the end of its log is idle: everything written to it has been read, so it holds
back nothing and counts as read up to the wall clock (the idle-source rule of event-time systems:
Flink's ``withIdleness``, Beam KafkaIO's "now - max delay" for an idle partition; see
docs/idle-partitions.md). Its newest event time counts again from its next record. A partition
never read but at its end (empty) counts as read too. When every partition is idle, the progress
is the wall clock: a snapshot stamped ahead of this clock is not passed until the clock gets there.

Only with one worker in all. Workers hand events to each other through unbounded queues, so with
more than one a worker can read seconds ahead of the worker that folds what it read: measured
with two workers on a backlog, 1 to 28 of 35,433 keys had a snapshot compared before its past had
arrived (an extra rebase, a spurious drift alert). With more workers a snapshot waits for its
key's own stock changes, which all come through one partition and one queue, or the timeout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

_NONE_ACTIVE = 2**62  # the progress of no partition (every one at its end): above any event time


class StockProgress:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._newest: dict[int, int] = {}
        self._at_end: set[int] = set()
        self._lock = threading.Lock()
        self._expected = 1
        self._clock = clock
        # (the oldest newest event time of the partitions being read, 0 while one was never read;
        #  the oldest newest event time of the partitions at their end, None when none is)
        self._view: tuple[int, int | None] = (0, None)

    def reset(self, partitions: int) -> None:
        """Start over (a run, or a restart that re-reads from its snapshot) expecting ``partitions``."""
        with self._lock:
            self._newest.clear()
            self._at_end.clear()
            self._expected = max(1, partitions)
            self._view = (0, None)

    def saw(self, newest_by_partition: dict[int, int]) -> None:
        """The newest event times of a batch of wms records (the decode step)."""
        with self._lock:
            for partition, t in newest_by_partition.items():
                if t > self._newest.get(partition, 0):
                    self._newest[partition] = t
            self._update()

    def at_end(self, partition: int) -> None:
        """The consumer of ``partition`` has read everything written to it (end of partition)."""
        with self._lock:
            self._at_end.add(partition)
            self._update()

    def reading(self, partition: int) -> None:
        """``partition`` got records again after its end: its newest event time counts again."""
        with self._lock:
            self._at_end.discard(partition)
            self._update()

    def _update(self) -> None:
        newest, ends = self._newest, self._at_end
        if not ends:
            # A partition not read yet could hold anything: no progress until every one was.
            self._view = (min(newest.values()) if len(newest) >= self._expected else 0, None)
            return
        if len(ends) + sum(1 for p in newest if p not in ends) < self._expected:
            self._view = (0, None)
            return
        active = min((t for p, t in newest.items() if p not in ends), default=_NONE_ACTIVE)
        self._view = (active, min(newest.get(p, 0) for p in ends))

    def get(self) -> int:
        """The event time every wms partition has been read to: the oldest of the partitions' newest
        event times, a partition at its end counting as read up to now (0: one was never read)."""
        active, idle = self._view
        if idle is None:
            return active
        return min(active, max(idle, int(self._clock() * 1000)))


STOCK_PROGRESS = StockProgress()


def no_progress() -> int:
    """The read progress of a dataflow with more than one worker: none to go by (see above)."""
    return 0
