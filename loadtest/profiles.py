"""Load profiles and the arrival schedule they give: when each request is due, fixed before the run starts.

An open model sends on this schedule whatever the server does, so a slow response cannot hold back the next
request (the coordinated omission of closed-loop generators); latency is measured from the scheduled time.

The schedule integrates the profile's rate ``r(t)`` in small slices: arrival ``n`` is due when the cumulative
count ``Λ(t) = ∫ r`` crosses threshold ``n``. With ``uniform`` arrivals the thresholds are ``0.5, 1.5, 2.5 …``
(evenly spaced, as wrk2 and k6's arrival-rate executors pace requests), so every second holds its integral to within
one request. With ``poisson`` arrivals they are running sums of Exp(1) draws: a non-homogeneous Poisson process,
burstier, seeded.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum

SLICE_S = 0.01  # integration step: the rate is taken as constant within one slice


class ProfileName(StrEnum):
    STEADY = "steady"
    RAMP = "ramp"
    SPIKE = "spike"
    DEADLINE = "deadline"
    RENEWALS = "renewals"  # not an arrival rate: plans due at once, run by loadtest/renewals.py


class Arrivals(StrEnum):
    UNIFORM = "uniform"
    POISSON = "poisson"


# Per profile: baseline rate per second, duration and peak multiplier when no flag says otherwise.
DEFAULTS: dict[ProfileName, tuple[float, float, float]] = {
    ProfileName.STEADY: (50.0, 60.0, 1.0),
    ProfileName.RAMP: (20.0, 60.0, 10.0),
    ProfileName.SPIKE: (30.0, 60.0, 8.0),
    ProfileName.DEADLINE: (20.0, 150.0, 10.0),
    ProfileName.RENEWALS: (100.0, 60.0, 1.0),  # the rate is the processor's cap
}


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Profile:
    """``rate_per_s`` is the baseline; ``peak_multiplier`` scales it at the ramp's end, the spike or the deadline."""

    name: ProfileName
    rate_per_s: float
    duration_s: float
    peak_multiplier: float = 1.0

    def __post_init__(self) -> None:
        if not (self.rate_per_s > 0 and math.isfinite(self.rate_per_s)):
            raise ValueError(f"rate must be a positive number, got {self.rate_per_s}")
        if not (0 < self.duration_s <= 24 * 3600):
            raise ValueError(f"duration must be more than 0 and at most a day, got {self.duration_s}")
        if not (1 <= self.peak_multiplier <= 1000):
            raise ValueError(f"peak multiplier must be 1-1000, got {self.peak_multiplier}")

    @classmethod
    def named(
        cls,
        name: str,
        rate_per_s: float | None = None,
        duration_s: float | None = None,
        peak_multiplier: float | None = None,
    ) -> Profile:
        profile = ProfileName(name)
        rate, duration, peak = DEFAULTS[profile]
        return cls(
            profile,
            rate if rate_per_s is None else rate_per_s,
            duration if duration_s is None else duration_s,
            peak if peak_multiplier is None else peak_multiplier,
        )

    @property
    def peak_rate_per_s(self) -> float:
        return self.rate_per_s * self.peak_multiplier

    def phases(self) -> list[Phase]:
        d = self.duration_s
        if self.name is ProfileName.SPIKE:
            return [Phase("before", 0, 0.45 * d), Phase("spike", 0.45 * d, 0.55 * d), Phase("after", 0.55 * d, d)]
        if self.name is ProfileName.DEADLINE:
            return [
                Phase("baseline", 0, 0.2 * d),
                Phase("surge", 0.2 * d, 0.55 * d),
                Phase("deadline", 0.55 * d, 0.75 * d),
                Phase("tail", 0.75 * d, d),
            ]
        return [Phase(self.name.value, 0, d)]

    def rate_at(self, t: float) -> float:
        """Requests per second due at ``t`` seconds into the run (zero outside it)."""
        if not 0 <= t < self.duration_s:
            return 0.0
        return self.rate_per_s * _SHAPES[self.name](t / self.duration_s, self.peak_multiplier)

    def expected_per_second(self) -> list[float]:
        """How many arrivals each whole second should hold: the rate integrated over it."""
        seconds = math.ceil(self.duration_s)
        totals = [0.0] * seconds
        for start, rate in _slices(self):
            totals[min(int(start + SLICE_S / 2), seconds - 1)] += rate * SLICE_S
        return totals


def _steady(x: float, peak: float) -> float:
    return 1.0


def _ramp(x: float, peak: float) -> float:
    return 1.0 + (peak - 1.0) * x  # linear from the baseline to the peak


def _spike(x: float, peak: float) -> float:
    return peak if 0.45 <= x < 0.55 else 1.0


def _deadline(x: float, peak: float) -> float:
    if x < 0.2:  # ordinary traffic
        return 1.0
    if x < 0.55:  # emails and texts go out: exponential growth toward the deadline
        return peak ** ((x - 0.2) / 0.35)
    if x < 0.75:  # the deadline window
        return peak
    # after midnight: a sharp drop, then a tail decaying to half the baseline
    return 0.5 + (min(peak, 3.0) - 0.5) * math.exp(-(x - 0.75) / 0.06)


_SHAPES: dict[ProfileName, Callable[[float, float], float]] = {
    ProfileName.STEADY: _steady,
    ProfileName.RAMP: _ramp,
    ProfileName.SPIKE: _spike,
    ProfileName.DEADLINE: _deadline,
    ProfileName.RENEWALS: _steady,
}


def _slices(profile: Profile) -> Iterator[tuple[float, float]]:
    count = math.ceil(profile.duration_s / SLICE_S)
    for index in range(count):
        start = index * SLICE_S
        yield start, profile.rate_at(min(start + SLICE_S / 2, profile.duration_s - 1e-9))


def arrival_times(profile: Profile, arrivals: Arrivals = Arrivals.UNIFORM, seed: int = 0) -> list[float]:
    """Seconds after the start at which each request is due, in order. Pure: same inputs, same schedule."""
    rng = random.Random(seed)

    def next_threshold(previous: float) -> float:
        return previous + (1.0 if arrivals is Arrivals.UNIFORM else rng.expovariate(1.0))

    times: list[float] = []
    cumulative = 0.0
    threshold = 0.5 if arrivals is Arrivals.UNIFORM else rng.expovariate(1.0)
    for start, rate in _slices(profile):
        end_cumulative = cumulative + rate * SLICE_S
        while threshold <= end_cumulative and rate > 0:
            times.append(start + (threshold - cumulative) / rate)
            threshold = next_threshold(threshold)
        cumulative = end_cumulative
    return times


def per_second(times: list[float], duration_s: float) -> list[int]:
    counts = [0] * math.ceil(duration_s)
    for t in times:
        counts[min(int(t), len(counts) - 1)] += 1
    return counts
