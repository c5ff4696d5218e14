"""The simulated processor's settings: latency, injected faults, rate cap, fees and webhook signing.

Validated when constructed, with every problem named by its environment variable, so a bad load-test set-up fails
at start-up rather than as odd numbers an hour later. The default is the quiet processor that ``surge serve`` and
the tests use (no latency, no cap, no faults); :meth:`SimulatedConfig.realistic` is the load-test target.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

ENVIRONMENT_PREFIX = "SURGE_SIM_"
PRESET_VARIABLE = "SURGE_SIM_PRESET"
_NO_CAP_WORDS = ("none", "off", "unlimited")


class SimulatedConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class OutageWindow:
    """A half-open interval [start_s, end_s) in Unix epoch seconds, or seconds after the processor started."""

    start_s: float
    end_s: float
    relative: bool = False

    def contains(self, now_epoch_s: float, started_epoch_s: float) -> bool:
        offset_s = started_epoch_s if self.relative else 0.0
        return self.start_s + offset_s <= now_epoch_s < self.end_s + offset_s

    def end_epoch_s(self, started_epoch_s: float) -> float:
        return self.end_s + (started_epoch_s if self.relative else 0.0)

    @classmethod
    def parse(cls, text: str) -> OutageWindow:
        """``+30-+45`` (seconds after start) or ``1732700000-1732700060`` (epoch seconds)."""
        start_text, separator, end_text = text.strip().partition("-")
        if not separator:
            raise ValueError(f"outage window {text!r} is not START-END")
        start_relative, end_relative = start_text.startswith("+"), end_text.startswith("+")
        if start_relative != end_relative:
            raise ValueError(f"outage window {text!r} mixes relative (+) and absolute times")
        return cls(float(start_text.lstrip("+")), float(end_text.lstrip("+")), start_relative)


@dataclass(frozen=True, slots=True)
class SimulatedConfig:
    # Log-normal latency per API call; a median of zero means no latency at all.
    latency_ms_median: float = 0.0
    latency_ms_p99: float = 0.0
    # Fractions (0-1) of otherwise-succeeding charges that decline, or time out.
    decline_rate: float = 0.0
    timeout_rate: float = 0.0
    # Of the random timeouts, the fraction where the charge happened before the connection was lost.
    timeout_charged_fraction: float = 0.5
    # How long a timing-out call hangs: longer than any engine timeout, so the engine's own timeout fires first.
    hang_s: float = 30.0
    outages: tuple[OutageWindow, ...] = ()
    # Token bucket on charges per processor instance (per engine process); None: no cap.
    charges_per_s_max: float | None = None
    charges_burst_max: int | None = None  # bucket size; None: one second's worth of charges
    fee_rate_bp: int = 220  # basis points of the amount, rounded half up
    fee_fixed_minor: int = 30
    seed: int | None = None  # for latency, declines and timeouts; None: a fresh seed each start
    webhook_secret: str = "whsec_surge_simulated"
    webhook_tolerance_s: int = 300

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise SimulatedConfigError("invalid simulated processor configuration:\n  " + "\n  ".join(problems))

    @classmethod
    def realistic(cls, **overrides: Any) -> SimulatedConfig:
        """A processor like a busy real one, for load tests: slow tail, a rate cap, rare timeouts."""
        preset = cls(latency_ms_median=250.0, latency_ms_p99=1500.0, charges_per_s_max=100.0, timeout_rate=0.002)
        return replace(preset, **overrides)

    @classmethod
    def from_environment(cls, environment: Mapping[str, str] | None = None) -> SimulatedConfig:
        """``SURGE_SIM_PRESET`` (default or realistic), then one ``SURGE_SIM_<FIELD>`` per field overriding it."""
        environment = os.environ if environment is None else environment
        preset = environment.get(PRESET_VARIABLE, "").strip().lower() or "default"
        if preset not in ("default", "realistic"):
            raise SimulatedConfigError(f"{PRESET_VARIABLE} must be default or realistic, got {preset!r}")
        values: dict[str, Any] = {}
        problems = []
        for item in fields(cls):
            name = environment_name(item.name)
            raw = environment.get(name, "").strip()
            if not raw:
                continue
            try:
                values[item.name] = _PARSERS[item.name](raw)
            except ValueError as error:
                problems.append(f"{name}: cannot read {raw!r} ({error})")
        if problems:
            raise SimulatedConfigError("invalid simulated processor configuration:\n  " + "\n  ".join(problems))
        return cls.realistic(**values) if preset == "realistic" else cls(**values)


def environment_name(field_name: str) -> str:
    return ENVIRONMENT_PREFIX + field_name.upper()


def _optional_float(raw: str) -> float | None:
    return None if raw.lower() in _NO_CAP_WORDS else float(raw)


def _optional_int(raw: str) -> int | None:
    return None if raw.lower() in _NO_CAP_WORDS else int(raw)


def _outages(raw: str) -> tuple[OutageWindow, ...]:
    return tuple(OutageWindow.parse(part) for part in raw.split(",") if part.strip())


_PARSERS: dict[str, Callable[[str], Any]] = {
    "latency_ms_median": float,
    "latency_ms_p99": float,
    "decline_rate": float,
    "timeout_rate": float,
    "timeout_charged_fraction": float,
    "hang_s": float,
    "outages": _outages,
    "charges_per_s_max": _optional_float,
    "charges_burst_max": _optional_int,
    "fee_rate_bp": int,
    "fee_fixed_minor": int,
    "seed": _optional_int,
    "webhook_secret": str,
    "webhook_tolerance_s": int,
}


def _problems(config: SimulatedConfig) -> list[str]:
    problems = []

    def need(condition: bool, field_name: str, rule: str) -> None:
        if not condition:
            value = getattr(config, field_name)
            problems.append(f"{field_name} ({environment_name(field_name)}) {rule}, got {value!r}")

    for name in ("latency_ms_median", "latency_ms_p99", "decline_rate", "timeout_rate", "hang_s"):
        # NaN passes every comparison below, and infinity would hang forever.
        need(math.isfinite(getattr(config, name)), name, "must be a finite number")
    median_ms, p99_ms = config.latency_ms_median, config.latency_ms_p99
    need(0 <= median_ms <= 600_000, "latency_ms_median", "must be 0-600000")
    need(median_ms <= p99_ms <= 600_000, "latency_ms_p99", "must be at least latency_ms_median and at most 600000")
    need(median_ms > 0 or p99_ms == 0, "latency_ms_p99", "must be 0 when latency_ms_median is 0")
    for name in ("decline_rate", "timeout_rate", "timeout_charged_fraction"):
        need(0 <= getattr(config, name) <= 1, name, "must be a fraction between 0 and 1")
    need(0 < config.hang_s <= 3600, "hang_s", "must be more than 0 and at most 3600")
    for window in config.outages:
        if not (math.isfinite(window.start_s) and math.isfinite(window.end_s) and 0 <= window.start_s < window.end_s):
            need(False, "outages", f"need 0 <= start < end in every window ({window})")
    cap = config.charges_per_s_max
    need(cap is None or (math.isfinite(cap) and cap > 0), "charges_per_s_max", "must be more than 0 (or none)")
    burst = config.charges_burst_max
    need(burst is None or burst >= 1, "charges_burst_max", "must be at least 1")
    need(burst is None or cap is not None, "charges_burst_max", "needs charges_per_s_max")
    need(0 <= config.fee_rate_bp <= 10_000, "fee_rate_bp", "must be 0-10000 basis points")
    need(config.fee_fixed_minor >= 0, "fee_fixed_minor", "must be at least 0")
    need(bool(config.webhook_secret), "webhook_secret", "must not be empty")
    need(config.webhook_tolerance_s >= 1, "webhook_tolerance_s", "must be at least 1")
    return problems
