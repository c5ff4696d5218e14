"""The pipeline's bounds: timeouts, in-flight and queue caps, retry delays (all named with their unit last)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from engine.pipeline.review import ReviewLimits
from engine.pipeline.velocity import VelocityLimits


@dataclass(frozen=True)
class PipelineLimits:
    charge_timeout_ms: int = 8_000
    lease_grace_ms: int = 5_000  # a charging row is recovered this long after its charge would have timed out
    in_flight_max: int = 2_000  # donation requests inside the pipeline at once (per process)
    queue_depth_max: int = 200_000  # durable queue rows before intake sheds load with 503
    queue_poll_ms: int = 200
    claim_batch_max: int = 100
    retry_delay_ms: int = 2_000  # first delay before retrying a retryable charge or looking up an unknown one
    retry_delay_max_ms: int = 300_000
    velocity: VelocityLimits = field(default_factory=VelocityLimits)
    review: ReviewLimits = field(default_factory=ReviewLimits)

    def __post_init__(self) -> None:
        for name in ("charge_timeout_ms", "in_flight_max", "queue_depth_max", "queue_poll_ms", "claim_batch_max"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")

    @property
    def lease(self) -> timedelta:
        return timedelta(milliseconds=self.charge_timeout_ms + self.lease_grace_ms)
