"""Send a simulated stream at a target rate, with a progress bar and a clean Ctrl-C; and start a
simulation from the positions a keyspace already holds (``start_from_keyspace``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import redis
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from core import redact
from core.config import Settings
from core.errors import StackError
from dataflows.kafka.producer import EventProducer
from projection.client import connect
from projection.generations import current, read_meta
from projection.keys import READY, KeySpace, generations_of
from sandbox.simulator import Simulator

CATCH_UP_S = 60.0  # how long `atp simulate` waits for a running dataflow to read what was sent before


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


@dataclass(frozen=True)
class Start:
    generation: str  # the keyspace generation the API serves, whose positions the simulation continues
    positions: int  # of the simulation's keys, those that already had a position


def start_from_keyspace(sim: Simulator, settings: Settings, wait_s: float = CATCH_UP_S,
                        on_wait: Callable[[int], None] | None = None) -> Start:
    """Make ``sim`` continue from the stock of the positions the API serves, so that its snapshots and
    counts describe that stock. A running dataflow that has not read everything yet is waited for (up
    to ``wait_s``; ``on_wait`` is told how far behind it is, once): positions it has not written yet
    would be a wrong start. A keyspace that is rebuilding, or has positions but no meta, is refused."""
    _wait_caught_up(settings, wait_s, on_wait)
    try:
        client = connect(settings, socket_connect_timeout=5, socket_timeout=10)
        try:
            gens = generations_of(settings)
            name = current(client, gens)
            meta = read_meta(client, gens.keyspace(name))
            if meta is not None and meta.get("state") != READY:
                raise StackError(f"generation '{name}' is {meta.get('state')}: its positions are incomplete; run "
                                 "simulate again once `atp status` shows the keyspace ready")
            found = _positions(client, gens.keyspace(name), sim)
        finally:
            client.close()
    except redis.RedisError as exc:
        raise StackError(
            f"cannot read the positions to start from in Redis at {redact.url(settings.redis_url)} "
            f"({type(exc).__name__}: {redact.text(str(exc))}): start it (`atp stack up`) or set ATP_REDIS_URL; "
            "--from-empty skips this, for a keyspace that has no positions") from None
    if meta is None and found:
        raise StackError(f"generation '{name}' has positions but no meta (Redis lost it, or a re-publish is under "
                         "way): run simulate again once `atp status` shows the keyspace ready")
    sim.start_from(found)
    return Start(name, len(found))


def _positions(client: redis.Redis, ks: KeySpace, sim: Simulator) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(available, non-sellable, reserved) of every key of ``sim`` that has a readable position."""
    keys = [(sku, loc) for sku in sim.skus for loc in sim.locations]
    out: dict[tuple[str, str], tuple[int, int, int]] = {}
    for i in range(0, len(keys), 1000):
        chunk = keys[i:i + 1000]
        pipe = client.pipeline(transaction=False)
        for sku, loc in chunk:
            pipe.hmget(ks.position(sku, loc), "available_qty", "non_sellable", "reserved")
        for key, values in zip(chunk, pipe.execute()):
            try:
                available, held, reserved = (int(v) for v in values)
            except (TypeError, ValueError):  # no position (or one the API would not serve either)
                continue
            out[key] = (available, held, reserved)
    return out


def _wait_caught_up(settings: Settings, wait_s: float, on_wait: Callable[[int], None] | None) -> None:
    """Wait while a running dataflow (its metrics endpoint answers) is behind the input topics."""
    from confluent_kafka import KafkaException

    from sandbox.status import committed_offsets, input_lag, metrics_samples

    deadline = time.monotonic() + wait_s
    told = False
    while True:
        try:
            samples = metrics_samples(settings)
        except httpx.HTTPError:
            return  # no dataflow here to wait for: the positions are what they are
        if samples is None:
            return
        try:
            behind = input_lag(settings, samples, committed_offsets(settings)).known
        except KafkaException:
            return  # the end offsets are not to be had: nothing to wait for that can be told
        if behind == 0:
            time.sleep(0.5)  # the Redis sink writes right after the fold
            return
        if time.monotonic() > deadline:
            raise StackError(f"the dataflow is still {behind} records behind after {wait_s:.0f} s: the positions "
                             "to start from are not current yet; run simulate again once `atp status` shows no lag")
        if on_wait is not None and not told:
            on_wait(behind)
            told = True
        time.sleep(0.5)
