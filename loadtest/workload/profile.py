"""The peak-season traffic shape: a baseline, a ramp to a promotion peak, a hold, a decay.

``rate_at(t)`` is the offered rate in events/s at second ``t``; ``due_by(t)`` is its integral, the
number of events a paced generator should have sent by then (so pacing never drifts).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PeakProfile:
    base_rate: float = 1_000.0
    peak_factor: float = 10.0
    warmup_s: float = 10.0  # at the baseline
    ramp_s: float = 20.0  # linear up to base_rate * peak_factor
    hold_s: float = 30.0
    decay_s: float = 20.0  # linear back down to the baseline
    cooldown_s: float = 10.0  # at the baseline

    def __post_init__(self) -> None:
        if self.base_rate <= 0 or self.peak_factor < 1:
            raise ValueError("base_rate must be > 0 and peak_factor >= 1")
        if min(self.warmup_s, self.ramp_s, self.hold_s, self.decay_s, self.cooldown_s) < 0:
            raise ValueError("phase durations must be >= 0")

    @property
    def peak_rate(self) -> float:
        return self.base_rate * self.peak_factor

    @property
    def duration_s(self) -> float:
        return self.warmup_s + self.ramp_s + self.hold_s + self.decay_s + self.cooldown_s

    def _phases(self) -> list[tuple[float, float, float]]:
        """(length, rate at start, rate at end) of each phase."""
        b, p = self.base_rate, self.peak_rate
        return [(self.warmup_s, b, b), (self.ramp_s, b, p), (self.hold_s, p, p), (self.decay_s, p, b),
                (self.cooldown_s, b, b)]

    def rate_at(self, t: float) -> float:
        if t < 0 or t >= self.duration_s:
            return 0.0
        for length, r0, r1 in self._phases():
            if t < length:
                return r0 + (r1 - r0) * t / length
            t -= length
        return 0.0  # pragma: no cover - t < duration_s

    def due_by(self, t: float) -> float:
        """Events offered in [0, t): the integral of ``rate_at``."""
        total = 0.0
        t = min(max(t, 0.0), self.duration_s)
        for length, r0, r1 in self._phases():
            if t <= 0:
                break
            dt = min(t, length)
            if length > 0:
                total += dt * (r0 + (r0 + (r1 - r0) * dt / length)) / 2
            t -= dt
        return total

    @property
    def total_events(self) -> int:
        return int(self.due_by(self.duration_s))

    def phase_at(self, t: float) -> str:
        for name, (length, _, _) in zip(("warmup", "ramp", "hold", "decay", "cooldown"), self._phases()):
            if t < length:
                return name
            t -= length
        return "after"
