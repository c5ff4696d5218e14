"""The conditions the simulator imposes on callers: latency and outage windows (its rate cap is the toolkit's token
bucket). Pure: clocks and random sources are passed in, so tests can drive them — except the live control a chaos
rehearsal may name (the end of this module), which only a load test sets, through the processor's settings."""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

from adapters.simulated.config import OutageWindow, environment_name

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
        return rng.lognormvariate(math.log(self.latency_ms_median), sigma) * live_control().latency_factor(time.time())


def outage_end_epoch_s(windows: Sequence[OutageWindow], started_epoch_s: float, now_epoch_s: float) -> float | None:
    """When the outage under way at ``now_epoch_s`` ends, or None when the processor is up."""
    ends = [w.end_epoch_s(started_epoch_s) for w in windows if w.contains(now_epoch_s, started_epoch_s)]
    live_end = live_control().outage_end_epoch_s(now_epoch_s)
    if live_end is not None:
        ends.append(live_end)
    return max(ends) if ends else None


# ---- live fault control (load-test chaos only) -------------------------------------------------------------------
# A chaos rehearsal (loadtest/chaos) opens outage and slowdown windows while the engine runs. The settings above are
# read once at start, so the rehearsal writes a small JSON file and names it in this variable, read with the other
# settings (SimulatedConfig.fault_control_file) and handed here by the adapter's build (:func:`use_control_file`);
# unset (every deployment and every other test), nothing is read and nothing changes. The file holds absolute times:
#     {"outages": [[start_epoch_s, end_epoch_s], ...], "slowdowns": [[start_epoch_s, end_epoch_s, factor], ...]}
CONTROL_FILE_VARIABLE = environment_name("fault_control_file")  # SURGE_SIM_FAULT_CONTROL_FILE
_CONTROL_RECHECK_S = 0.25  # how often the file's modification time is looked at


@dataclass(frozen=True, slots=True)
class FaultControl:
    outages: tuple[tuple[float, float], ...] = ()
    slowdowns: tuple[tuple[float, float, float], ...] = ()

    def outage_end_epoch_s(self, now_epoch_s: float) -> float | None:
        ends = [end for start, end in self.outages if start <= now_epoch_s < end]
        return max(ends) if ends else None

    def latency_factor(self, now_epoch_s: float) -> float:
        factors = [factor for start, end, factor in self.slowdowns if start <= now_epoch_s < end]
        return max(factors) if factors else 1.0

    @classmethod
    def parse(cls, text: str) -> FaultControl:
        raw = json.loads(text)
        outages = tuple((float(start), float(end)) for start, end in raw.get("outages", ()))
        slowdowns = tuple((float(s), float(e), float(f)) for s, e, f in raw.get("slowdowns", ()))
        if any(not (math.isfinite(f) and 0 < f <= 1000) for _, _, f in slowdowns):
            raise ValueError("slowdown factors must be more than 0 and at most 1000")
        return cls(outages, slowdowns)


class FaultControlFile:
    """The control file named by ``SURGE_SIM_FAULT_CONTROL_FILE``, re-read when it changes; empty when none.

    An unreadable or malformed file keeps the last good control: a half-written file must not end an outage."""

    def __init__(self, path: str | Path | None) -> None:
        self._path = path
        self._control = FaultControl()
        self._mtime_ns: int | None = None
        self._checked_s = -math.inf

    def current(self, now_monotonic_s: float) -> FaultControl:
        if self._path is None or now_monotonic_s - self._checked_s < _CONTROL_RECHECK_S:
            return self._control
        self._checked_s = now_monotonic_s
        try:
            mtime_ns = os.stat(self._path).st_mtime_ns
            if mtime_ns != self._mtime_ns:
                with open(self._path, encoding="utf-8") as control:
                    self._control = FaultControl.parse(control.read())
                self._mtime_ns = mtime_ns
        except (OSError, ValueError, TypeError):
            pass
        return self._control


# One per process: the processor's latency and outage checks consult it. Empty until a processor is built with a
# control file in its settings (adapters/simulated/__init__.py's build).
_CONTROL_FILE = FaultControlFile(None)


def use_control_file(path: Path | None) -> None:
    """Follow the control file of the processor's settings (``SimulatedConfig.fault_control_file``), or none."""
    global _CONTROL_FILE
    _CONTROL_FILE = FaultControlFile(path)


def live_control() -> FaultControl:
    return _CONTROL_FILE.current(time.monotonic())
