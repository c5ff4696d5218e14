"""Per-processor admission: a token-bucket rate limit, a concurrency cap and a circuit breaker.

Processors are slower than intake (Stripe: ~100 requests/s per account in live mode, 25/s in test mode), so the
engine never sends faster than the budget: a donation that finds no token is queued durably and charged later.
The breaker stops sending while a processor keeps failing (timeouts, 5xx, outages), so that a WinRed-style outage
turns into a queue rather than thousands of hung requests; after ``breaker_open_s`` one probe is let through.
The token bucket is the processor's budget (engine/pipeline/budget.py): this process's own (``rate_per_s /
workers``), or its lease of the one bucket all engine hosts share.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from adapters.base import ChargeStatus
from toolkit.clock import SYSTEM_CLOCK, Clock
from toolkit.token_bucket import Budget, TokenBucket


@dataclass(frozen=True)
class GateLimits:
    rate_per_s: float = 100.0
    burst: int = 20
    concurrency_max: int = 64
    breaker_failures_max: int = 5
    breaker_open_s: float = 10.0

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0 or self.burst < 1 or self.concurrency_max < 1:
            raise ValueError("rate_per_s must be > 0, burst and concurrency_max >= 1")
        if self.breaker_failures_max < 1 or self.breaker_open_s <= 0:
            raise ValueError("breaker_failures_max must be >= 1 and breaker_open_s > 0")


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(self, failures_max: int, open_s: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self.failures_max = failures_max
        self.open_s = open_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock.monotonic() - self._opened_at >= self.open_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allows(self) -> bool:
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        return False

    def cancel_probe(self) -> None:
        self._probe_in_flight = False

    def record(self, failed: bool) -> None:
        self._probe_in_flight = False
        if not failed:
            self._failures = 0
            self._opened_at = None
            return
        self._failures += 1
        if self._failures >= self.failures_max or self._opened_at is not None:
            self._opened_at = self._clock.monotonic()


# Outcomes that say the processor is unhealthy (as opposed to the card being bad).
_UNHEALTHY = frozenset({ChargeStatus.UNKNOWN, ChargeStatus.RETRYABLE})


class ProcessorGate:
    def __init__(self, limits: GateLimits, clock: Clock = SYSTEM_CLOCK, budget: Budget | None = None) -> None:
        self.limits = limits
        self.bucket: Budget = budget if budget is not None else TokenBucket(limits.rate_per_s, limits.burst, clock)
        self.breaker = CircuitBreaker(limits.breaker_failures_max, limits.breaker_open_s, clock)
        self.in_flight = 0

    def capacity(self) -> int:
        """How many charges could start now."""
        if self.breaker.state is BreakerState.OPEN:
            return 0
        return max(0, min(self.bucket.available(), self.limits.concurrency_max - self.in_flight))

    def try_acquire(self) -> bool:
        if self.in_flight >= self.limits.concurrency_max or self.bucket.available() < 1:
            return False
        if not self.breaker.allows():
            return False
        self.bucket.try_take()
        self.in_flight += 1
        return True

    def return_unused(self) -> None:
        """An acquired slot that was never used for a call: neither a success nor a failure for the breaker, but a
        half-open breaker's probe slot must be given back, or no probe would ever be let through again."""
        self.in_flight -= 1
        self.breaker.cancel_probe()

    def release(self, status: ChargeStatus | None) -> None:
        """``status`` None means the call never completed (cancelled): counts as unhealthy."""
        self.in_flight -= 1
        self.breaker.record(status is None or status in _UNHEALTHY)
