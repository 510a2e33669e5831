"""How far the wms topic has been read, in event time: for deciding when a snapshot's past is in.

A snapshot arrives on its own topic, at its own pace: during a replay or after an outage it can
be read long before the stock changes that precede it. It is compared with the stream once the
wms partitions have all passed its ``as_of`` (or its key's own stock changes have, or a timeout ran
out). Process-wide, fed by the decode step; in cluster mode the other processes' partitions come
from their statuses (``dataflows.cluster``).
"""

from __future__ import annotations

import threading


class StockProgress:
    def __init__(self) -> None:
        self._newest: dict[int, int] = {}  # read by this process
        self._others: dict[int, int] = {}  # read by the other processes of a cluster (dataflows.cluster)
        self._lock = threading.Lock()
        self._expected = 1
        self.low = 0  # the oldest of the partitions' newest wms event times (0: not all read yet)

    def reset(self, partitions: int) -> None:
        """Start over (a run, or a restart that re-reads from its snapshot) expecting ``partitions``."""
        with self._lock:
            self._newest.clear()
            self._others.clear()
            self._expected = max(1, partitions)
            self.low = 0

    def saw(self, newest_by_partition: dict[int, int]) -> None:
        with self._lock:
            for partition, t in newest_by_partition.items():
                if t > self._newest.get(partition, 0):
                    self._newest[partition] = t
            self._update()

    def others_saw(self, newest_by_partition: dict[int, int]) -> None:
        """What the other processes of the cluster have read (each reads its own partitions)."""
        with self._lock:
            self._others = dict(newest_by_partition)
            self._update()

    def _update(self) -> None:
        merged = {**self._others, **self._newest}
        # A partition not read yet could hold anything: no progress until every one was.
        self.low = min(merged.values()) if len(merged) >= self._expected else 0

    def mine(self) -> dict[int, int]:
        with self._lock:
            return dict(self._newest)

    def get(self) -> int:
        return self.low


STOCK_PROGRESS = StockProgress()
