"""``atp chaos``: the real dataflow and API on the embedded stack, under faults, checked by the oracle.

One run: start a private stack (broker + Redis), the dataflow and the API as child processes;
produce a seeded stream with duplicates and poison at a paced rate; meanwhile kill -9 the dataflow,
lose Redis's data, and pause the dataflow and Redis, on a seeded schedule; a poller reads the API
the whole time. Then read the log back, fold it with the independent oracle, and compare every key
in Redis and over HTTP. The report says what went in, what came out and what each fault cost.
"""

from __future__ import annotations

import os
import random
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from core import redact
from core.config import Settings, load_settings
from dataflows.kafka import admin as kafka_admin
from dataflows.kafka.producer import EventProducer
from dataflows.runtime.recovery import RecoveryStore
from loadtest.chaos.input import Outgoing, build_input
from loadtest.common.machine import machine
from loadtest.truth.verify import Verdict, verify
from projection.keys import keyspace_of
from sandbox.child import Child
from sandbox.scrape import scrape
from sandbox.stack import Stack, free_port

Log = Callable[[str], None]


@dataclass(frozen=True)
class ChaosConfig:
    events: int = 200_000
    skus: int = 2_000
    locations: int = 20
    seed: int = 1
    rate: float = 0.0  # events/s; 0 spreads production over the fault schedule
    kills: int = 3
    kill_gap_s: tuple[float, float] = (5.0, 30.0)  # time between faults
    duplicates: float = 0.10
    poison: float = 0.005
    redis_loss: str = "flush"  # flush | restart | none
    pause_dataflow: bool = True
    pause_redis: bool = True
    pause_s: tuple[float, float] = (10.0, 60.0)
    snapshot_interval_s: float = 2.0
    workers: int = 1
    settle_timeout_s: float = 300.0
    broker: str = "tansu"  # tansu | kafka (ATP_STACK_BROKER): broker faults need kafka, whose log survives them
    broker_kills: int = 0  # kill -9 of the broker, restarted on its kept log
    pause_broker: bool = False  # SIGSTOP/SIGCONT of the broker for pause_s

    def schedule(self) -> list[tuple[float, str, float]]:
        """(start second, fault, duration) in a seeded order, one fault at a time."""
        rng = random.Random(self.seed)
        kinds = ["kill"] * self.kills
        if self.redis_loss != "none":
            kinds.append(f"redis_{self.redis_loss}")
        if self.pause_dataflow:
            kinds.append("pause_dataflow")
        if self.pause_redis:
            kinds.append("pause_redis")
        if self.broker_kills or self.pause_broker:
            if self.broker != "kafka":
                raise ValueError("broker faults need the kafka broker: the embedded tansu loses its log with it")
            kinds += ["kill_broker"] * self.broker_kills + (["pause_broker"] if self.pause_broker else [])
        rng.shuffle(kinds)
        out, t = [], 0.0
        for kind in kinds:
            t += rng.uniform(*self.kill_gap_s)
            dur = rng.uniform(*self.pause_s) if kind.startswith("pause") else 0.0
            out.append((round(t, 1), kind, round(dur, 1)))
            t += dur
        return out


@dataclass
class FaultRecord:
    kind: str
    at_s: float
    duration_s: float = 0.0
    offsets_before: int | None = None  # input offsets consumed (sampled) before a kill
    resume_offsets: int | None = None  # committed offsets the restart resumes from
    replayed_at_least: int | None = None
    recovery_s: float | None = None  # kill -> back at the pre-kill offsets; flush -> keyspace ready


class Sampler(threading.Thread):
    """Scrapes the dataflow's consumed input offsets every 0.25 s."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.offsets: dict[str, float] = {}
        self.stopped = threading.Event()

    @property
    def consumed(self) -> int:
        return int(sum(self.offsets.values()))

    def reset(self) -> None:
        self.offsets = {}

    def run(self) -> None:
        while not self.stopped.wait(0.25):
            try:
                samples = scrape(self.url, timeout_s=1.0)
            except httpx.HTTPError:
                continue
            self.offsets = {f"{dict(lab)['partition']}-{dict(lab)['topic']}": v
                            for (name, lab), v in samples.items() if name == "atp_input_offset"}


class Poller(threading.Thread):
    """Reads hot keys over HTTP the whole run; a version that goes down in a 200 is a regression."""

    def __init__(self, base_url: str, keys: list[tuple[str, str]]) -> None:
        super().__init__(daemon=True)
        self.url = f"{base_url}/v1/availability/query"
        self.body = {"items": [{"sku": s, "location": loc} for s, loc in keys]}
        self.seen: dict[tuple[str, str], int] = {}
        self.regressions: list[dict[str, Any]] = []
        self.statuses: Counter[str] = Counter()
        self.positions_read = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=5.0) as client:
            while not self.stopped.wait(0.02):
                try:
                    r = client.post(self.url, json=self.body)
                except httpx.HTTPError as exc:
                    self.statuses[type(exc).__name__] += 1
                    continue
                if r.status_code != 200:
                    code = r.json().get("error", {}).get("code", "?") if r.content else "?"
                    self.statuses[f"{r.status_code} {code}"] += 1
                    continue
                self.statuses["200"] += 1
                for res in r.json()["results"]:
                    if not res["found"]:
                        continue
                    key, version = (res["sku"], res["location"]), res["availability"]["version"]
                    self.positions_read += 1
                    if version < self.seen.get(key, 0):
                        self.regressions.append({"key": "@".join(key), "was": self.seen[key], "now": version,
                                                 "at": time.time()})
                    self.seen[key] = max(version, self.seen.get(key, 0))


@dataclass
class ChaosRun:
    config: ChaosConfig
    log: Log = print
    faults: list[FaultRecord] = field(default_factory=list)
    unplanned_exits: list[str] = field(default_factory=list)

    def execute(self, work_dir: Path) -> dict[str, Any]:
        cfg = self.config
        started_wall = time.time()
        outer = self.log
        self.log = lambda line: outer(f"[{time.time() - started_wall:6.1f}s] {line}")
        settings = load_settings(
            {}, state_dir=work_dir / "state", api_auth="disabled", kafka_bootstrap=f"127.0.0.1:{free_port()}",
            redis_url=f"redis://127.0.0.1:{free_port()}/0", api_port=free_port(), metrics_port=free_port(),
            snapshot_interval_s=cfg.snapshot_interval_s, workers=cfg.workers, redis_key_prefix="chaos",
            stack_broker=cfg.broker,
        )
        self.settings = settings
        stack = Stack(settings)
        self.stack = stack
        flow = Child(["run"], settings, work_dir / "dataflow.log")
        api = Child(["serve"], settings, work_dir / "api.log")
        self.flow = flow
        sampler = Sampler(f"http://{settings.metrics_host}:{settings.metrics_port}/metrics")
        self.sampler = sampler
        records, mixed = build_input(cfg.events, cfg.skus, cfg.locations, cfg.seed, cfg.duplicates, cfg.poison)
        schedule = cfg.schedule()
        production_s = (schedule[-1][0] + 3.0) if schedule else 10.0
        rate = cfg.rate or max(200.0, len(records) / production_s)
        self.log(f"input: {len(records):,} records ({cfg.events:,} events, {mixed['duplicate']:,} duplicates, "
                 f"{mixed['poison']:,} poison) at {rate:,.0f}/s; faults: "
                 + ", ".join(f"{k}@{t:.0f}s" + (f"/{d:.0f}s" if d else "") for t, k, d in schedule))
        sim_probe = build_hot_keys(cfg)
        poller = Poller(f"http://{settings.api_host}:{settings.api_port}", sim_probe)
        producer = EventProducer(settings)
        try:
            self.log(f"stack: broker {settings.kafka_bootstrap}, redis {redact.url(settings.redis_url)}")
            stack.up(create_topics=True)
            flow.start()
            api.start()
            sampler.start()
            poller.start()
            t0 = time.monotonic()
            sender = threading.Thread(target=self._produce, args=(producer, records, rate), daemon=True)
            sender.start()
            for at_s, kind, dur in schedule:
                self._wait_until(t0 + at_s, flow)
                self._fault(kind, dur, t0)
            sender.join()
            sent, failed = producer.sent, producer.failed
            del producer  # closes its connections before the broker goes away
            self.log(f"produced {sent:,} records ({failed} failed) in {time.monotonic() - t0:.0f} s")
            verdict = self._settle(settings, records, mixed, flow, poller)
        finally:
            poller.stopped.set()
            sampler.stopped.set()
            api.stop()
            flow.stop()
            stack.down()
            self.log("stopped the dataflow, the API and the stack")
        report = self._report(verdict, mixed, rate, sent, failed, poller, started_wall, time.time() - started_wall)
        return report

    # -- the parts ---------------------------------------------------------------------------
    def _produce(self, producer: EventProducer, records: list[Outgoing], rate: float) -> None:
        topics = {alias: self.settings.topic_alias(alias) for alias in ("wms", "orders", "snapshots")}
        started = time.monotonic()
        for i, rec in enumerate(records):
            if i % 100 == 0:
                ahead = started + i / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            if rec.record is not None:
                producer.send(rec.alias, rec.record)
            else:
                producer.send_raw(topics[rec.alias], rec.key, rec.value)
        producer.flush(60)

    def _wait_until(self, deadline: float, flow: Child) -> None:
        while time.monotonic() < deadline:
            self._supervise(flow)
            time.sleep(0.1)

    def _supervise(self, flow: Child) -> None:
        if flow.p is not None and flow.p.poll() is not None:
            self.unplanned_exits.append(f"dataflow exited with {flow.p.returncode}: {flow.tail(600)}")
            self.log(f"dataflow exited on its own (code {flow.p.returncode}); restarting it")
            flow.start()

    def _fault(self, kind: str, dur: float, t0: float) -> None:
        rec = FaultRecord(kind, round(time.monotonic() - t0, 1), dur)
        self.faults.append(rec)
        flow, sampler = self.flow, self.sampler
        if kind == "kill":
            rec.offsets_before = sampler.consumed
            flow.stop(signal.SIGKILL)
            killed = time.monotonic()
            _, committed = RecoveryStore(self.settings.recovery_dir).committed_offsets()
            rec.resume_offsets = int(sum(max(0, v) for v in committed.values()))
            rec.replayed_at_least = max(0, rec.offsets_before - rec.resume_offsets)
            sampler.reset()
            time.sleep(0.5)
            flow.start()
            target = rec.offsets_before
            while sampler.consumed < target and time.monotonic() - killed < 120:
                self._supervise(flow)
                time.sleep(0.1)
            rec.recovery_s = round(time.monotonic() - killed, 2)
            self.log(f"kill -9 at {rec.at_s:.0f}s: resumed from offset sum {rec.resume_offsets:,}, replayed at "
                     f"least {rec.replayed_at_least:,}, back where it was after {rec.recovery_s:.1f} s")
        elif kind.startswith("redis_"):
            client = redis.Redis.from_url(self.settings.redis_url, socket_timeout=5)
            lost = time.monotonic()
            if kind == "redis_flush":
                client.flushall()
            else:
                self.stack.stop("redis")
                self.stack.up(create_topics=False)
            ks_meta = keyspace_of(self.settings).meta
            while time.monotonic() - lost < 180:
                try:
                    if client.hget(ks_meta, "state") == b"ready":
                        break
                except redis.exceptions.RedisError:
                    pass
                self._supervise(flow)
                time.sleep(0.1)
            rec.recovery_s = round(time.monotonic() - lost, 2)
            self.log(f"{kind} at {rec.at_s:.0f}s: keyspace re-published and ready after {rec.recovery_s:.1f} s")
        elif kind == "kill_broker":
            pid = self.stack.pid("broker")
            rec.offsets_before = sampler.consumed
            down = time.monotonic()
            if pid is not None:
                os.killpg(pid, signal.SIGKILL)
                while self.stack.pid("broker") is not None:
                    time.sleep(0.05)
            time.sleep(1.0)
            self.stack.up(create_topics=False)  # the same log: nothing formatted, nothing forgotten
            while sampler.consumed <= rec.offsets_before and time.monotonic() - down < 180:
                self._supervise(flow)
                time.sleep(0.1)
            rec.recovery_s = round(time.monotonic() - down, 2)
            self.log(f"kill -9 of the broker at {rec.at_s:.0f}s: restarted on its log, the dataflow reading "
                     f"again after {rec.recovery_s:.1f} s")
        else:
            if kind == "pause_dataflow":
                pid = flow.p.pid if flow.p else None
            else:
                pid = self.stack.pid("broker" if kind == "pause_broker" else "redis")
            if pid is None:
                return
            os.kill(pid, signal.SIGSTOP)
            self.log(f"{kind} at {rec.at_s:.0f}s for {dur:.0f} s")
            deadline = time.monotonic() + dur
            while time.monotonic() < deadline:  # the others go on: the dataflow is still supervised
                self._supervise(flow)
                time.sleep(0.1)
            os.kill(pid, signal.SIGCONT)

    def _settle(self, settings: Settings, records: list[Outgoing], mixed: Counter[str], flow: Child,
                poller: Poller) -> Verdict:
        ends = kafka_admin.end_offsets(settings)
        deadline = time.monotonic() + self.config.settle_timeout_s
        self.log(f"waiting for the dataflow to consume {sum(ends.values()):,} records and settle")
        store = RecoveryStore(settings.recovery_dir)
        while time.monotonic() < deadline:
            self._supervise(flow)
            # A partition with nothing new since the last restart has no offset gauge yet; its
            # committed offset in the recovery store says the same thing.
            committed = store.committed_offsets()[1]
            if all(max(self.sampler.offsets.get(k, 0), committed.get(k, 0)) >= v for k, v in ends.items() if v > 0):
                break
            time.sleep(0.25)
        else:
            self.log("the dataflow did not report consuming to the end offsets; verifying anyway")
        verdict = verify(settings, self.log)
        while not verdict.converged and time.monotonic() < deadline:  # the last positions may be in flight
            time.sleep(1.0)
            verdict = verify(settings, self.log, verdict.expected)
        return verdict

    def _report(self, v: Verdict, mixed: Counter[str], rate: float, sent: int, failed: int, poller: Poller,
                started_wall: float, duration_s: float) -> dict[str, Any]:
        checks = {
            "lost_events": v.lost,
            "double_counted_events": v.double_counted,
            "keys_mismatched_redis": len(v.redis_mismatches),
            "keys_mismatched_http": len(v.http_mismatches),
            "api_version_regressions": len(poller.regressions),
            "dead_letters_missing": len(v.dead_letters_missing),
            "dead_letters_unexpected": len(v.dead_letters_unexpected),
            "unplanned_dataflow_exits": len(self.unplanned_exits),
        }
        balance = v.valid_records + v.dead_lettered == v.log_records == sent - failed
        kills = [f for f in self.faults if f.kind == "kill"]
        return {
            "kind": "chaos",
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_wall)),
            "duration_s": round(duration_s, 1),
            "machine": machine(),
            "config": asdict(self.config),
            "offered_rate": round(rate, 1),
            "events": {
                "produced": sent,
                "produce_failures": failed,
                "in_log": v.log_records,
                "distinct_valid_events": v.applied,
                "duplicates_produced": mixed["duplicate"],
                "duplicates_absorbed": v.duplicates,
                "poison_produced": mixed["poison"],
                "dead_lettered": v.dead_lettered,
                "dead_letters_resent_after_crashes": v.dead_letters_resent,
                "dead_letter_reasons": dict(v.dead_letter_reasons),
                "processed_plus_dead_lettered_equals_produced": balance,
            },
            "keys": {"compared_redis": v.keys, "compared_http": v.http_keys},
            "checks": checks,
            "faults": [asdict(f) for f in self.faults],
            "kills": len(kills),
            "api": {"positions_read": poller.positions_read, "responses": dict(poller.statuses),
                    "regressions": poller.regressions[:20]},
            "unplanned_exits": self.unplanned_exits,
            "examples": {"redis": v.redis_mismatches[:5], "http": v.http_mismatches[:5]},
            "passed": balance and all(n == 0 for n in checks.values()),
        }


def build_hot_keys(cfg: ChaosConfig) -> list[tuple[str, str]]:
    """The busiest SKUs (Zipf rank order) at every location, at most 200 keys."""
    from sandbox.simulator import Simulator

    sim = Simulator(seed=cfg.seed, skus=cfg.skus, locations=cfg.locations)
    per = max(1, 200 // len(sim.locations))
    return [(s, loc) for s in sim.busiest(per) for loc in sim.locations][:200]


def run_chaos(config: ChaosConfig, work_dir: Path | None = None, log: Log = print) -> dict[str, Any]:
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
        return ChaosRun(config, log).execute(work_dir)
    with tempfile.TemporaryDirectory(prefix="atp-chaos-") as tmp:
        return ChaosRun(config, log).execute(Path(tmp))
