"""The conditions the simulator imposes on callers: latency and outage windows (its rate cap is the toolkit's token
bucket). Pure: clocks and random sources are passed in, so tests can drive them."""

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


def outage_end_epoch_s(windows: Sequence[OutageWindow], started_epoch_s: float, now_epoch_s: float) -> float | None:
    """When the outage under way at ``now_epoch_s`` ends, or None when the processor is up."""
    ends = [w.end_epoch_s(started_epoch_s) for w in windows if w.contains(now_epoch_s, started_epoch_s)]
    return max(ends) if ends else None
