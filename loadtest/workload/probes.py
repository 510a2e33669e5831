"""Freshness probes: how long an event takes from ``produce()`` to being readable.

The generator interleaves a probe event every few milliseconds: an ``ADJUST +1`` on one of a few
dedicated probe keys (``PROBE-<run>-<k>`` at the simulated locations, so they spread over the
partitions), stamped with its send time as ``occurred_at``. A probe takes exactly the path of every
other event (decode, fold, Redis, API). Nothing else touches a probe key, so when its stored
``as_of`` changes, the probe sent at that time has just become readable: freshness is the watcher's
clock minus ``as_of``. Two watcher processes poll only the probe keys: Redis every 5 ms (one
pipelined ``HGET`` per poll), the API every 25 ms (one ``POST /v1/availability/query``), so that
measuring takes little CPU from the pipeline. The resolution is the poll interval plus a millisecond
(``as_of`` is in ms).
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

Key = tuple[str, str]


def probe_keys(run_tag: str, count: int, locations: list[str]) -> list[Key]:
    return [(f"PROBE-{run_tag}-{k:02d}", locations[k % len(locations)]) for k in range(count)]


class ProbeSource:
    """Probe events, round-robin over the probe keys."""

    def __init__(self, keys: list[Key], run_tag: str) -> None:
        self.keys = keys
        self.run_tag = run_tag
        self.sent = 0

    def next(self, now_ms: int) -> tuple[str, dict[str, Any]]:
        sku, loc = self.keys[self.sent % len(self.keys)]
        self.sent += 1
        return "wms", {"event_id": f"probe-{self.run_tag}-{self.sent}", "occurred_at": now_ms, "source": "loadtest",
                       "sku": sku, "location": loc, "event_type": "ADJUST", "qty": 1, "reason": "freshness-probe"}


@dataclass(frozen=True)
class Sample:
    seen_s: float  # wall clock when the watcher saw the change
    latency_ms: float


def _watch_redis(url: str, keys: list[str], stop: Any, out: Any, interval_s: float) -> None:
    import redis

    client = redis.Redis.from_url(url)
    last: dict[str, int] = {}
    samples: list[tuple[float, float]] = []
    while not stop.is_set():
        pipe = client.pipeline(transaction=False)
        for k in keys:
            pipe.hget(k, "as_of")
        values = pipe.execute()
        now = time.time()
        for k, v in zip(keys, values):
            if v is None:
                continue
            as_of = int(v)
            if last.get(k) != as_of:
                if k in last:  # the first value seen may be older than the watcher
                    samples.append((now, now * 1000 - as_of))
                last[k] = as_of
        time.sleep(interval_s)
    out.put(samples)


def _watch_http(base_url: str, keys: list[Key], stop: Any, out: Any, interval_s: float) -> None:
    import httpx

    body = {"items": [{"sku": s, "location": loc} for s, loc in keys]}
    last: dict[Key, float] = {}
    samples: list[tuple[float, float]] = []
    with httpx.Client(base_url=base_url, timeout=5.0) as http:
        while not stop.is_set():
            try:
                results = http.post("/v1/availability/query", json=body).json()["results"]
            except (httpx.HTTPError, KeyError, ValueError):
                time.sleep(0.05)
                continue
            now = time.time()
            for r in results:
                a = r.get("availability")
                if not a:
                    continue
                key = (r["sku"], r["location"])
                as_of = datetime.fromisoformat(a["as_of"]).timestamp() * 1000
                if last.get(key) != as_of:
                    if key in last:
                        samples.append((now, now * 1000 - as_of))
                    last[key] = as_of
            time.sleep(interval_s)
    out.put(samples)


class Watchers:
    """Two processes (Redis and HTTP) so their polling never competes with the generator's GIL."""

    def __init__(self, redis_url: str, redis_keys: list[str], api_url: str, keys: list[Key],
                 redis_interval_s: float = 0.005, http_interval_s: float = 0.025) -> None:
        ctx = mp.get_context("spawn")
        self._stop = ctx.Event()
        self._queues = {"redis": ctx.Queue(), "http": ctx.Queue()}
        self._procs = {
            "redis": ctx.Process(target=_watch_redis, args=(redis_url, redis_keys, self._stop, self._queues["redis"],
                                                             redis_interval_s), daemon=True),
            "http": ctx.Process(target=_watch_http, args=(api_url, keys, self._stop, self._queues["http"],
                                                           http_interval_s), daemon=True),
        }

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs.values() if p.pid is not None]

    def start(self) -> Watchers:
        for p in self._procs.values():
            p.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> dict[str, list[Sample]]:
        self._stop.set()
        out: dict[str, list[Sample]] = {}
        for name, q in self._queues.items():
            try:
                out[name] = [Sample(s, lat) for s, lat in q.get(timeout=timeout_s)]
            except queue.Empty:  # a watcher that died reports nothing
                out[name] = []
            self._procs[name].join(timeout_s)
            if self._procs[name].is_alive():
                self._procs[name].kill()
        return out


def percentiles(values: list[float], ps: tuple[float, ...] = (50, 95, 99)) -> dict[str, float | None]:
    """Nearest-rank percentiles, rounded to 0.1 ms; None without samples."""
    if not values:
        return {f"p{p:g}": None for p in ps}
    s = sorted(values)
    return {f"p{p:g}": round(s[min(len(s) - 1, max(0, int(round(p / 100 * len(s))) - 1))], 1) for p in ps}
