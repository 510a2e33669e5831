"""The paced generator and the lag sampler of ``atp loadtest``.

The generator sends the simulator's events at the rate a :class:`PeakProfile` asks for, pacing by
the profile's integral (never drifting), with a freshness probe every ``probe_interval_s``. It
records what it actually offered each second: when it cannot keep up, the report says so instead
of pretending the target rate was offered.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from dataflows.kafka.producer import EventProducer
from loadtest.workload.probes import ProbeSource
from loadtest.workload.profile import PeakProfile
from sandbox.scrape import scrape, total
from sandbox.simulator import Simulator


@dataclass
class Offered:
    per_second: list[int] = field(default_factory=list)  # events sent in each second of the profile
    sent: int = 0
    probes: int = 0
    seconds: float = 0.0
    interrupted: bool = False


def offer(profile: PeakProfile, sim: Simulator, producer: EventProducer, probes: ProbeSource,
          probe_interval_s: float, show_progress: bool = True, label: str = "offer") -> Offered:
    """Send the profile's traffic; stamps events with the wall clock. Ctrl-C ends it early, cleanly."""
    out = Offered(per_second=[0] * (int(profile.duration_s) + 1))
    t0 = time.monotonic()
    next_probe = t0
    progress = Progress(TextColumn(label), BarColumn(), TextColumn("{task.fields[rate]:>8,.0f} ev/s target"),
                        TimeElapsedColumn(), disable=not show_progress)
    with progress:
        task = progress.add_task("offer", total=profile.duration_s, rate=profile.base_rate)
        last_update = t0
        try:
            while True:
                now = time.monotonic()
                t = now - t0
                if t >= profile.duration_s:
                    break
                if now >= next_probe:
                    producer.send(*probes.next(int(time.time() * 1000)))
                    out.probes += 1
                    next_probe += probe_interval_s
                due = int(profile.due_by(t)) - out.sent
                if due <= 0:
                    time.sleep(min(0.001, max(0.0, next_probe - now)))
                    continue
                burst = min(due, 200)  # re-read the clock at least every 200 events
                for _ in range(burst):
                    producer.send(*sim.next(int(time.time() * 1000)))
                out.sent += burst
                out.per_second[int(t)] += burst
                if now - last_update > 0.5:
                    progress.update(task, completed=t, rate=profile.rate_at(t))
                    last_update = now
        except KeyboardInterrupt:
            out.interrupted = True
        finally:
            producer.flush(60)
    out.seconds = time.monotonic() - t0
    return out


@dataclass
class LagPoint:
    t_s: float
    produced: int
    consumed: int

    @property
    def lag(self) -> int:
        return max(0, self.produced - self.consumed)


class LagSampler(threading.Thread):
    """Once a second: records produced (by the generator) against records consumed by the dataflow
    (the sum of its ``atp_input_offset`` gauges; the input topics start empty)."""

    def __init__(self, metrics_url: str, producer: EventProducer, interval_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.url, self.producer, self.interval_s = metrics_url, producer, interval_s
        self.points: list[LagPoint] = []
        self.stopped = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            produced = self.producer.sent
            try:
                consumed = int(total(scrape(self.url, timeout_s=1.0), "atp_input_offset"))
            except httpx.HTTPError:
                continue
            self.points.append(LagPoint(round(time.monotonic() - self.t0, 2), produced, consumed))

    def lag_now(self) -> int | None:
        return self.points[-1].lag if self.points else None
