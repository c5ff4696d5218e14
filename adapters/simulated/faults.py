"""The conditions the simulator imposes on callers: latency, a rate cap and outage windows. Pure: clocks and random
sources are passed in, so tests can drive them."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

from adapters.simulated.config import OutageWindow

_Z_P99 = NormalDist().inv_cdf(0.99)  # a p99 is this many standard deviations above the median of the logarithm


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """Log-normal latency fixed by its median and 99th percentile: the long right tail of real API calls."""

    latency_ms_median: float
    latency_ms_p99: float

    def sample_ms(self, rng: random.Random) -> float:
        if self.latency_ms_median <= 0:
            return 0.0
        sigma = math.log(self.latency_ms_p99 / self.latency_ms_median) / _Z_P99
        return rng.lognormvariate(math.log(self.latency_ms_median), sigma)


class TokenBucket:
    """Allows ``rate_per_s`` on average and bursts of up to ``burst_max``, as a processor's API rate limit does."""

    def __init__(self, rate_per_s: float, burst_max: int, now_s: float) -> None:
        if rate_per_s <= 0 or burst_max < 1:
            raise ValueError(f"need rate_per_s > 0 and burst_max >= 1, got {rate_per_s}, {burst_max}")
        self.rate_per_s = rate_per_s
        self.burst_max = burst_max
        self._tokens = float(burst_max)
        self._updated_s = now_s

    def take(self, now_s: float) -> bool:
        """Spend one token if there is one; False means rate limited."""
        elapsed_s = max(0.0, now_s - self._updated_s)  # a clock that steps back must not drain the bucket
        self._tokens = min(float(self.burst_max), self._tokens + elapsed_s * self.rate_per_s)
        self._updated_s = max(self._updated_s, now_s)
        # The tolerance keeps float sums such as 0.05 s + 0.05 s at 10/s from falling a hair short of one token.
        if self._tokens >= 1 - 1e-9:
            self._tokens = max(0.0, self._tokens - 1)
            return True
        return False


def outage_end_epoch_s(windows: Sequence[OutageWindow], started_epoch_s: float, now_epoch_s: float) -> float | None:
    """When the outage under way at ``now_epoch_s`` ends, or None when the processor is up."""
    ends = [w.end_epoch_s(started_epoch_s) for w in windows if w.contains(now_epoch_s, started_epoch_s)]
    return max(ends) if ends else None
