"""What a load test run is asked to do (its configuration) and the phases it goes through."""

from __future__ import annotations

from dataclasses import dataclass, field

from loadtest.workload.generator import LagPoint, Offered
from loadtest.workload.probes import Sample, percentiles
from loadtest.workload.profile import PeakProfile


@dataclass(frozen=True)
class LoadConfig:
    profile: PeakProfile = PeakProfile()
    skus: int = 20_000
    locations: int = 20
    seed: int = 1
    workers: int = 1
    snapshot_s: float = 5.0  # the dataflow's ATP_SNAPSHOT_INTERVAL_S
    api_workers: int = 2
    probe_interval_s: float = 0.02
    probe_keys: int = 16
    find_max: bool = False
    step_rates: tuple[float, ...] = (5_000, 10_000, 15_000, 20_000, 25_000)
    step_s: float = 60.0
    api_s: float = 15.0  # per wrk phase; 0 skips the API phases
    api_rate: float = 5_000.0
    drain_timeout_s: float = 120.0
    broker: str = "tansu"  # the private stack's broker (ATP_STACK_BROKER): tansu | kafka


@dataclass
class Phase:
    name: str
    target_rate: float  # peak target for the peak profile
    wall_start: float
    wall_end: float
    offered: Offered
    lag: list[LagPoint] = field(default_factory=list)
    cores: dict[str, float] = field(default_factory=dict)  # CPU seconds per wall second, per process

    def freshness(self, samples: list[Sample]) -> dict[str, float | None]:
        inside = [s.latency_ms for s in samples if self.wall_start <= s.seen_s <= self.wall_end]
        return {"samples": len(inside), **percentiles(inside)}
