"""Kill -9 the dataflow mid-stream, restart it with recovery: Redis ends equal to a plain fold."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from dataflows.kafka.producer import EventProducer
from projection.codec import from_hash
from projection.keys import KeySpace
from sandbox.simulator import Simulator
from tests.conftest import processed, send_events, wait_until
from tests.reference import fold_all

pytestmark = pytest.mark.integration


class VersionWatcher(threading.Thread):
    """Reads hot keys from Redis the whole time and records any version that goes backwards."""

    def __init__(self, client, keys):
        super().__init__(daemon=True)
        self.client, self.keys = client, keys
        self.regressions: list[tuple[str, int, int]] = []
        self.reads = 0
        self.stop = threading.Event()

    def run(self):
        seen: dict[str, int] = {}
        while not self.stop.is_set():
            for key in self.keys:
                raw = self.client.hget(key, "version")
                if raw is not None:
                    v = int(raw)
                    if v < seen.get(key, 0):
                        self.regressions.append((key, seen[key], v))
                    seen[key] = max(v, seen.get(key, 0))
                    self.reads += 1
            time.sleep(0.005)


def test_kill_and_restart_converges_to_the_fold(settings, start, rclient):
    sim = Simulator(seed=99, skus=60, locations=4)
    items = [sim.next() for _ in range(24_000)]
    producer = EventProducer(settings)
    ks = KeySpace(settings.redis_key_prefix)
    watcher = VersionWatcher(rclient, [ks.position(s, loc) for s in sim.busiest(5) for loc in sim.locations])
    watcher.start()

    send_events(producer, items[:8000])
    flow = start("run")
    wait_until(lambda: processed(settings) >= 8000, 60, "the first third", flow)
    sender = threading.Thread(target=send_events, args=(producer, items[8000:], 8000))  # about 2 s of traffic
    sender.start()
    time.sleep(1.0)
    before_kill = processed(settings)
    flow.stop(signal.SIGKILL)
    sender.join()
    assert 8000 < before_kill < len(items), "the kill must land while events are flowing"

    flow2 = start("run")
    expected = fold_all(items)

    def redis_matches():
        pipe = rclient.pipeline(transaction=False)
        for p in expected.values():
            pipe.hgetall(ks.position(p.sku, p.location))
        stored = [from_hash(raw) for raw in pipe.execute()]
        return all(s is not None and s["version"] == p.version for s, p in zip(stored, expected.values())) and stored

    stored = wait_until(redis_matches, 90, "Redis to converge to the fold", flow2, interval=0.5)
    watcher.stop.set()
    watcher.join()
    for s, p in zip(stored, expected.values()):
        for field in ("atp", "available_qty", "on_hand", "reserved", "non_sellable", "inbound", "shortfall", "as_of"):
            assert s[field] == getattr(p, field), (p.key, field)
    assert watcher.reads > 100 and watcher.regressions == []
    # The restart resumed from a snapshot, not from offset 0, and replayed what the crash lost.
    after_restart = processed(settings)
    assert 0 < after_restart < len(items)
    assert before_kill + after_restart >= len(items)
    print(f"killed at {before_kill} events, restart processed {after_restart}, "
          f"replayed {before_kill + after_restart - len(items)}")
