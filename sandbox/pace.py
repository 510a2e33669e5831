"""Send a simulated stream at a target rate, with a progress bar and a clean Ctrl-C."""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from dataflows.kafka.producer import EventProducer
from sandbox.simulator import Simulator


@dataclass
class SendResult:
    sent: int
    failed: int
    seconds: float
    interrupted: bool

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def send_paced(sim: Simulator, producer: EventProducer, rate: float, count: int,
               live_time: bool = True, show_progress: bool = True) -> SendResult:
    """Send ``count`` events at ``rate``/s (0 = as fast as possible); stamps events with now if live."""
    started = time.monotonic()
    interrupted = False
    progress = Progress(TextColumn("simulate"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]:>8.0f} ev/s"), TimeRemainingColumn(), disable=not show_progress)
    with progress:
        task = progress.add_task("send", total=count, rate=0.0)
        try:
            for i in range(count):
                if rate > 0 and i % 100 == 0:
                    ahead = started + i / rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
                alias, record = sim.next(int(time.time() * 1000) if live_time else None)
                producer.send(alias, record)
                if i % 1000 == 999:
                    elapsed = time.monotonic() - started
                    progress.update(task, completed=i + 1, rate=(i + 1) / elapsed)
            progress.update(task, completed=count)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            producer.flush()
    return SendResult(producer.sent, producer.failed, time.monotonic() - started, interrupted)
