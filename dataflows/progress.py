"""How far the wms topic has been read, in event time: for deciding when a snapshot's past is in.

A snapshot arrives on its own topic, at its own pace: during a replay or after an outage it can
be read long before the stock changes that precede it. It is compared with the stream once the
wms partitions read by this process have all passed its ``as_of`` (or its key's own stock
changes have, or a timeout ran out). Process-wide, fed by the decode step.

Only with one worker in all. Workers hand events to each other through unbounded queues, so with
more than one a worker can read seconds ahead of the worker that folds what it read: measured
with two workers on a backlog, 1 to 28 of 35,433 keys had a snapshot compared before its past had
arrived (an extra rebase, a spurious drift alert). With more workers a snapshot waits for its
key's own stock changes, which all come through one partition and one queue, or the timeout.
"""

from __future__ import annotations

import threading


class StockProgress:
    def __init__(self) -> None:
        self._newest: dict[int, int] = {}
        self._lock = threading.Lock()
        self._expected = 1
        self.low = 0  # the oldest of the partitions' newest wms event times (0: not all read yet)

    def reset(self, partitions: int) -> None:
        """Start over (a run, or a restart that re-reads from its snapshot) expecting ``partitions``."""
        with self._lock:
            self._newest.clear()
            self._expected = max(1, partitions)
            self.low = 0

    def saw(self, newest_by_partition: dict[int, int]) -> None:
        with self._lock:
            for partition, t in newest_by_partition.items():
                if t > self._newest.get(partition, 0):
                    self._newest[partition] = t
            # A partition not read yet could hold anything: no progress until every one was.
            self.low = min(self._newest.values()) if len(self._newest) >= self._expected else 0

    def get(self) -> int:
        return self.low


STOCK_PROGRESS = StockProgress()


def no_progress() -> int:
    """The read progress of a dataflow with more than one worker: none to go by (see above)."""
    return 0
