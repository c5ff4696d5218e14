"""The simulated processor's settings: latency, injected faults, rate cap, fees and webhook signing.

Validated when constructed, with every problem named by its environment variable, so a bad load-test set-up fails
at start-up rather than as odd numbers an hour later. The default is the quiet processor that ``surge serve`` and
the tests use (no latency, no cap, no faults); :meth:`SimulatedConfig.realistic` is the load-test target.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from toolkit.settings import EnvironmentSettings, SettingsError, choice, custom, integer, number, optional, path, text

ENVIRONMENT_PREFIX = "SURGE_SIM_"
_HEADING = "invalid simulated processor configuration"


class SimulatedConfigError(SettingsError):
    """The simulated processor's settings are unusable; the message names each bad variable."""


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
    # The live fault control a chaos rehearsal writes (adapters/simulated/faults.py); None everywhere else.
    fault_control_file: Path | None = None
    # Where charges are on record: "database" (schema simulator: durable, shared by processes, what load and kill
    # tests need) or "memory" — this process only, charges only, lost on exit. Memory is for the throughput
    # benchmark alone, so that it measures Surge's cost and not the stand-in's (a real processor's record lives at
    # the processor); refunds, disputes, payouts and events need the database record.
    record: str = "database"

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise SimulatedConfigError.listing(_HEADING, problems)

    @classmethod
    def realistic(cls, **overrides: Any) -> SimulatedConfig:
        """A processor like a busy real one, for load tests: slow tail, a rate cap, rare timeouts."""
        preset = cls(latency_ms_median=250.0, latency_ms_p99=1500.0, charges_per_s_max=100.0, timeout_rate=0.002)
        return replace(preset, **overrides)

    @classmethod
    def from_environment(cls, environment: Mapping[str, str] | None = None) -> SimulatedConfig:
        """``SURGE_SIM_PRESET`` (default or realistic), then one ``SURGE_SIM_<FIELD>`` per field overriding it."""
        values = ENVIRONMENT.read(environment, heading=_HEADING, error=SimulatedConfigError)
        preset = values.pop("preset", "default")
        return cls.realistic(**values) if preset == "realistic" else cls(**values)


def _outages(raw: str) -> tuple[OutageWindow, ...]:
    return tuple(OutageWindow.parse(part) for part in raw.split(",") if part.strip())


# One variable per field, and the preset they override.
ENVIRONMENT = EnvironmentSettings(
    ENVIRONMENT_PREFIX,
    {
        "preset": choice("default", "realistic"),
        "latency_ms_median": number(),
        "latency_ms_p99": number(),
        "decline_rate": number(),
        "timeout_rate": number(),
        "timeout_charged_fraction": number(),
        "hang_s": number(),
        "outages": custom(_outages, "outage windows START-END separated by commas (+30-+45 or epoch seconds)"),
        "charges_per_s_max": optional(number()),
        "charges_burst_max": optional(integer()),
        "fee_rate_bp": integer(),
        "fee_fixed_minor": integer(),
        "seed": optional(integer()),
        "webhook_secret": text(),
        "webhook_tolerance_s": integer(),
        "fault_control_file": optional(path()),
        "record": choice("database", "memory"),
    },
)
PRESET_VARIABLE = ENVIRONMENT.name("preset")


def environment_name(field_name: str) -> str:
    return ENVIRONMENT.name(field_name)


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
