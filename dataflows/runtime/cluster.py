"""Cluster mode: what the processes of one Bytewax cluster tell each other through Redis.

Bytewax moves data between the processes; it does not share our process-wide bookkeeping. A
re-publish is complete only when every process has written the keys it resumed, and process 0
judges that.

Every process writes its status (a field of one hash, ``{prefix}:cluster``) twice a second; each
one reads the others'. The coordinator (process 0) clears the hash whenever it starts a run, so a
status in it is always from a process of the current cluster.

The statuses are also the cluster's heartbeat. Bytewax stops every process when one crashes, but
a process that leaves cleanly (stopped alone) leaves the others waiting for it forever; a process
whose peer's status stops changing for ``PEER_TIMEOUT_S`` stops too, so that a supervisor restarts
the cluster.

Process 0 also decides how a run starts (``dataflows.runtime.continuity.plan_start``); the others follow
the keyspace meta it writes (``follow_start``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import redis

from core.config import Settings
from projection.keys import keyspace_of


@dataclass(frozen=True)
class Status:
    built: int = 0  # resumed keys that registered for a re-publish
    pending: int = 0  # ... and are not in Redis yet
    beat: int = 0  # counts the writer's statuses: a peer whose count stops changing has left

    def dumps(self) -> str:
        return json.dumps({"built": self.built, "pending": self.pending, "beat": self.beat}, separators=(",", ":"))

    @classmethod
    def loads(cls, raw: bytes | str) -> Status:
        d = json.loads(raw)
        return cls(int(d["built"]), int(d["pending"]), int(d["beat"]))


PEER_TIMEOUT_S = 10.0


class Board:
    """The cluster's statuses in Redis: one field per process."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._client, self._key = client, f"{keyspace_of(settings).prefix}:cluster"
        self.me, self.processes = settings.process_id or 0, settings.processes
        self._beat = 0
        self._seen: dict[int, tuple[int, float]] = {}  # peer -> (its beat, when it last changed: monotonic)

    def clear(self) -> None:
        self._client.delete(self._key)

    def publish(self, status: Status) -> None:
        self._beat += 1
        self._client.hset(self._key, str(self.me), Status(status.built, status.pending, self._beat).dumps())

    def read(self) -> dict[int, Status]:
        statuses = {int(k): Status.loads(v) for k, v in self._client.hgetall(self._key).items()}
        now = time.monotonic()
        for peer, status in statuses.items():
            if self._seen.get(peer, (None, 0.0))[0] != status.beat:
                self._seen[peer] = (status.beat, now)
        return statuses

    def silent(self, timeout_s: float = PEER_TIMEOUT_S) -> list[int]:
        """Peers seen in this run whose status has not changed for ``timeout_s`` (by this process's clock)."""
        now = time.monotonic()
        return sorted(p for p, (_, since) in self._seen.items() if p != self.me and now - since > timeout_s)

    def forget(self) -> None:
        """After a failed exchange (Redis unreachable): nobody could write, so every peer's clock restarts."""
        self._seen.clear()

    def republished(self, expected_keys: int) -> bool:
        """Every process reported, their resumed keys add up to ``expected_keys``, and none is pending."""
        statuses = self.read()
        return (len(statuses) >= self.processes and sum(s.built for s in statuses.values()) >= expected_keys
                and not any(s.pending for s in statuses.values()))
