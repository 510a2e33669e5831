"""``atp loadtest``: the real dataflow and API on a private stack under peak-season traffic.

One run starts a broker, Redis, the dataflow and the API (free loopback ports), then:

1. **api**: after a 10 s warm-up at the baseline rate, ``wrk`` against the API while the generator
   keeps the baseline rate: single-key reads flat out and at a fixed rate, and 100-key batch reads;
2. **peak**: the :class:`PeakProfile` (baseline, ramp to the promotion peak, hold, decay) with
   freshness probes; consumer lag and offered rate every second;
3. **max** (``--find-max``): constant-rate steps, each held ``--step-s`` seconds, until the lag stops
   being bounded; then a step at 80 % of the highest bounded rate, for its freshness.

Freshness probes and the lag sampler run through all of them. The embedded broker keeps every
record in memory and its CPU grows with what it holds, so the API runs first and a long run's later
phases measure the broker as much as the pipeline; the report lists each process's CPU per phase.

Everything is stopped afterwards, whatever happens; the numbers go to the report.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core import redact
from core.config import Settings, child_environ, load_settings
from dataflows.kafka.producer import EventProducer
from loadtest.common.harness import cpu_of
from loadtest.load import api as apiload
from loadtest.load.config import LoadConfig, Phase
from loadtest.load.report import bounded, build_report
from loadtest.workload.generator import LagSampler, offer
from loadtest.workload.probes import ProbeSource, Watchers, probe_keys
from loadtest.workload.profile import PeakProfile
from projection.client import connect
from projection.keys import keyspace_of
from sandbox.demo import wait_http
from sandbox.simulator import Simulator
from sandbox.stack import Stack, free_port

Log = Callable[[str], None]


@contextmanager
def live(cfg: LoadConfig, work_dir: Path, log: Log) -> Iterator[tuple[Settings, Stack]]:
    settings = load_settings({}, state_dir=work_dir / "state", api_auth="disabled", kafka_bootstrap=f"127.0.0.1:{free_port()}",
                             redis_url=f"redis://127.0.0.1:{free_port()}/0", api_port=free_port(),
                             metrics_port=free_port(), workers=cfg.workers, api_workers=cfg.api_workers,
                             redis_key_prefix="load", stack_broker=cfg.broker,
                             snapshot_interval_s=cfg.snapshot_s)
    stack = Stack(settings)
    try:
        stack.up(create_topics=True)
        env = child_environ(settings, os.environ)
        stack.start("dataflow", [sys.executable, "-m", "atp", "run"], env)
        stack.start("api", [sys.executable, "-m", "atp", "serve"], env)
        wait_http(f"http://{settings.metrics_host}:{settings.metrics_port}/metrics", 60, "the dataflow", stack, "dataflow")
        wait_http(f"http://{settings.api_host}:{settings.api_port}/healthz", 30, "the API", stack, "api")
        log(f"stack up: broker {settings.kafka_bootstrap}, redis {redact.url(settings.redis_url)}, "
            f"API :{settings.api_port}, dataflow metrics :{settings.metrics_port}")
        yield settings, stack
    finally:
        stack.down()
        log("stopped the dataflow, the API and the stack")


class LoadRun:
    def __init__(self, cfg: LoadConfig, log: Log = print, show_progress: bool = True) -> None:
        self.cfg, self.log, self.show_progress = cfg, log, show_progress
        self.phases: list[Phase] = []
        self.api: list[dict[str, Any]] = []

    def execute(self, work_dir: Path) -> dict[str, Any]:
        cfg = self.cfg
        tag = format(int(time.time()) % 1_000_000, "x")
        sim = Simulator(cfg.seed, cfg.skus, cfg.locations)
        keys = probe_keys(tag, cfg.probe_keys, sim.locations)
        probes = ProbeSource(keys, tag)
        started = time.time()
        with live(cfg, work_dir, self.log) as (settings, stack):
            self.settings = settings
            ks = keyspace_of(settings)
            api_url = f"http://{settings.api_host}:{settings.api_port}"
            watchers = Watchers(settings.redis_url, [ks.position(s, loc) for s, loc in keys], api_url, keys).start()
            self.pids = {name: stack.pid(name) for name in ("broker", "redis", "dataflow", "api")}
            self.watcher_pids = watchers.pids
            producer = EventProducer(settings)
            sampler = LagSampler(f"http://{settings.metrics_host}:{settings.metrics_port}/metrics", producer)
            sampler.start()
            try:
                if cfg.api_s > 0:  # first: the embedded broker slows as its in-memory log grows
                    self._phase("warm-up", _constant(cfg.profile.base_rate, 10), sim, producer, probes, sampler)
                    self._api_phases(api_url, sim, producer, probes, sampler, work_dir)
                    self._drain(sampler)
                self._phase("peak", cfg.profile, sim, producer, probes, sampler)
                self._drain(sampler)
                if cfg.find_max:
                    self._find_max(sim, producer, probes, sampler)
            finally:
                sampler.stopped.set()
                samples = watchers.stop()
            self.log(f"probes seen: redis {len(samples['redis'])}, http {len(samples['http'])}")

        return build_report(cfg, self.phases, self.api, samples, sampler.points, started, sampler.t0)

    # -- phases ------------------------------------------------------------------------------
    def _phase(self, name: str, profile: PeakProfile, sim: Simulator, producer: EventProducer,
               probes: ProbeSource, sampler: LagSampler, progress: bool = True) -> Phase:
        self.log(f"{name}: {profile.duration_s:.0f} s, {profile.base_rate:,.0f} -> {profile.peak_rate:,.0f} ev/s")
        w0 = time.time()
        m0 = time.monotonic() - sampler.t0
        cpu0 = self._cpu()
        off = offer(profile, sim, producer, probes, self.cfg.probe_interval_s, progress and self.show_progress, name)
        m1 = time.monotonic() - sampler.t0
        cpu1 = self._cpu()
        ph = Phase(name, profile.peak_rate, w0, time.time(), off, [p for p in sampler.points if m0 <= p.t_s <= m1],
                   {k: round((cpu1[k] - cpu0[k]) / (m1 - m0), 2) for k in cpu0} if m1 > m0 else {})
        self.phases.append(ph)
        rate = off.sent / off.seconds if off.seconds else 0
        self.log(f"{name}: offered {off.sent:,} events in {off.seconds:.1f} s ({rate:,.0f}/s), lag now {sampler.lag_now()}")
        if off.interrupted:
            raise KeyboardInterrupt
        return ph

    def _cpu(self) -> dict[str, float]:
        """CPU seconds so far of each process of the run (the generator is this process)."""
        import resource

        me = resource.getrusage(resource.RUSAGE_SELF)
        out = {name: cpu_of(pid) for name, pid in self.pids.items()}
        out["generator"] = me.ru_utime + me.ru_stime
        out["probe watchers"] = sum(cpu_of(pid) for pid in self.watcher_pids)
        return out

    def _drain(self, sampler: LagSampler) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < self.cfg.drain_timeout_s:
            lag = sampler.lag_now()
            if lag is not None and lag == 0 and sampler.points[-1].t_s > t0 - sampler.t0:
                break
            time.sleep(0.5)
        return time.monotonic() - t0

    def _find_max(self, sim: Simulator, producer: EventProducer, probes: ProbeSource, sampler: LagSampler) -> None:

        best = 0.0
        for rate in self.cfg.step_rates:
            ph = self._phase(f"step-{rate:.0f}", _constant(rate, self.cfg.step_s), sim, producer, probes, sampler)
            ok = bounded(ph)
            self.log(f"step {rate:,.0f}/s: lag {'bounded' if ok else 'NOT bounded'}")
            drained = self._drain(sampler)
            if not ok:
                break
            best = rate
            self.log(f"drained in {drained:.0f} s")
        if best:
            self._phase(f"at-80pct-{0.8 * best:.0f}", _constant(0.8 * best, self.cfg.step_s), sim, producer, probes, sampler)
            self._drain(sampler)

    def _api_phases(self, api_url: str, sim: Simulator, producer: EventProducer, probes: ProbeSource,
                    sampler: LagSampler, work_dir: Path) -> None:
        import threading

        if apiload.wrk_binary() is None:
            self.log("wrk not found: skipping the API phases (apt-get install wrk)")
            return
        cfg = self.cfg
        hot = _existing_keys(self.settings, 2_000)
        runs: list[tuple[str, dict[str, Any]]] = [
            ("single-key max", dict(connections=32)),
            (f"single-key at {cfg.api_rate:,.0f} rps", dict(connections=32, target_rps=cfg.api_rate)),
            ("100-key batch max", dict(connections=8, batch=100)),
            ("100-key batch at 200 rps", dict(connections=8, batch=100, target_rps=200))]
        # First the API alone (the generator idle: its capacity), then beside the pipeline at the
        # baseline rate (what it keeps on machines it shares with the broker and the dataflow).
        for name, kw in runs:
            self._wrk(api_url, hot, work_dir, f"alone {name}", kw)
        # Traffic for the whole second part: each run, the calibration run before a paced one, and a margin.
        seconds = sum(cfg.api_s + (apiload.CALIBRATION_S if kw.get("target_rps") else 0) for _, kw in runs)
        background = _constant(self.cfg.profile.base_rate, seconds + 5)
        t = threading.Thread(target=self._phase, args=("api-background", background, sim, producer, probes, sampler),
                             kwargs={"progress": False}, daemon=True)  # the log lines are wrk's
        t.start()
        try:
            time.sleep(2)
            for name, kw in runs:
                self._wrk(api_url, hot, work_dir, name, kw)
        finally:
            t.join()

    def _wrk(self, api_url: str, keys: list[tuple[str, str]], work_dir: Path, name: str, kw: dict[str, Any]) -> None:
        r = apiload.run_wrk(api_url, keys, work_dir, name.replace(" ", "_"), self.cfg.api_s, **kw)
        self.api.append(r.as_dict())
        self.log(f"api {name}: {r.rps:,.0f} rps, p50 {r.latency_ms['p50']} ms, p99 {r.latency_ms['p99']} ms, "
                 f"errors {r.errors}")


def _existing_keys(settings: Settings, limit: int) -> list[tuple[str, str]]:
    """Keys the dataflow has published (so every read finds its position), at most ``limit``."""
    client = connect(settings)
    prefix = f"{keyspace_of(settings).prefix}:pos:"
    keys = []
    for raw in client.scan_iter(match=prefix + "{SKU-*", count=1000):
        sku, _, loc = raw.decode()[len(prefix) + 1:].partition("}:")
        keys.append((sku, loc))
        if len(keys) >= limit:
            break
    return keys


def _constant(rate: float, seconds: float) -> PeakProfile:
    return PeakProfile(base_rate=rate, peak_factor=1.0, warmup_s=seconds, ramp_s=0, hold_s=0, decay_s=0, cooldown_s=0)


def run_loadtest(cfg: LoadConfig, work_dir: Path | None = None, log: Log = print, show_progress: bool = True) -> dict[str, Any]:
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
        return LoadRun(cfg, log, show_progress).execute(work_dir)
    with tempfile.TemporaryDirectory(prefix="atp-load-") as tmp:
        return LoadRun(cfg, log, show_progress).execute(Path(tmp))
