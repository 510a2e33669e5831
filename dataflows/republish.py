"""Process-wide state of a re-publish: which resumed keys still have to reach Redis.

When Redis loses the keyspace (a restart without persistence, FLUSHALL, a failover to an empty
replica), the dataflow restarts from its last snapshot with ``active`` set. Every key Bytewax
resumes then asks to be notified at once and emits its position (``PositionLogic``); the Redis
sink ticks keys off as it writes them; the readiness monitor marks the keyspace ready when none
are left and the committed input offsets have reached the end offsets seen at the restart.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field


def _nothing() -> None:
    pass


@dataclass
class Republish:
    active: bool = False
    built: int = 0  # resumed keys that registered
    keys: set[str] = field(default_factory=set)  # registered, not yet written to Redis
    lost: threading.Event = field(default_factory=threading.Event)  # the keyspace vanished
    on_lost: Callable[[], None] = _nothing  # set by `atp run`: stop the flow so it can restart
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self, active: bool) -> None:
        with self.lock:
            self.active, self.built = active, 0
            self.keys.clear()
            self.lost.clear()

    def report_lost(self) -> None:
        """Called by whoever notices first (the sink or the watch); stops the flow once."""
        with self.lock:
            if self.lost.is_set():
                return
            self.lost.set()
        self.on_lost()

    def register(self, key: str) -> None:
        with self.lock:
            self.built += 1
            self.keys.add(key)

    def written(self, keys: list[str]) -> None:
        with self.lock:
            self.keys.difference_update(keys)


REPUBLISH = Republish()
