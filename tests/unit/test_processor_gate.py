"""The per-processor gate: token bucket, concurrency cap and circuit breaker (pure, no I/O)."""

from __future__ import annotations

from adapters.base import ChargeStatus
from engine.pipeline.gate import BreakerState, GateLimits, ProcessorGate
from toolkit.clock import ManualClock
from toolkit.token_bucket import LeasedBucket


def test_the_breaker_opens_after_consecutive_failures_and_lets_one_probe_through() -> None:
    clock = ManualClock()
    limits = GateLimits(rate_per_s=1000, burst=100, breaker_failures_max=3, breaker_open_s=10.0)
    gate = ProcessorGate(limits, clock)
    for _ in range(3):
        assert gate.try_acquire()
        gate.release(ChargeStatus.UNKNOWN)
    assert gate.breaker.state is BreakerState.OPEN
    assert not gate.try_acquire()
    clock.advance(9.999)
    assert gate.breaker.state is BreakerState.OPEN and not gate.try_acquire()
    clock.advance(0.001)
    assert gate.try_acquire()  # the half-open probe
    assert not gate.try_acquire()  # only one at a time
    gate.release(ChargeStatus.SUCCEEDED)
    assert gate.breaker.state is BreakerState.CLOSED
    assert gate.try_acquire()


def test_a_probe_slot_returned_unused_lets_the_next_probe_through() -> None:
    clock = ManualClock()
    gate = ProcessorGate(GateLimits(rate_per_s=1000, burst=100, breaker_failures_max=1, breaker_open_s=10.0), clock)
    assert gate.try_acquire()
    gate.release(ChargeStatus.RETRYABLE)
    clock.advance(10.0)
    assert gate.breaker.state is BreakerState.HALF_OPEN
    assert gate.try_acquire()
    gate.return_unused()  # e.g. the donation was a replay and never reached the processor
    assert gate.in_flight == 0
    assert gate.try_acquire()


def test_declines_are_not_failures_of_the_processor() -> None:
    gate = ProcessorGate(GateLimits(rate_per_s=1000, burst=100, breaker_failures_max=2))
    for _ in range(10):
        assert gate.try_acquire()
        gate.release(ChargeStatus.DECLINED)
    assert gate.breaker.state is BreakerState.CLOSED


def test_the_rate_and_concurrency_limits() -> None:
    clock = ManualClock()
    gate = ProcessorGate(GateLimits(rate_per_s=1, burst=3, concurrency_max=2), clock)
    assert gate.try_acquire() and gate.try_acquire()
    assert not gate.try_acquire()  # concurrency cap
    gate.release(ChargeStatus.SUCCEEDED)
    assert gate.try_acquire()  # the third token of the burst
    gate.release(ChargeStatus.SUCCEEDED)
    gate.release(ChargeStatus.SUCCEEDED)
    assert not gate.try_acquire()  # bucket empty: one token a second
    assert gate.capacity() == 0
    clock.advance(0.5)
    assert gate.capacity() == 0
    clock.advance(0.5)
    assert gate.capacity() == 1 and gate.try_acquire()  # a second later, one more token


def test_a_failed_probe_opens_the_breaker_for_another_full_period() -> None:
    clock = ManualClock()
    gate = ProcessorGate(GateLimits(rate_per_s=1000, burst=100, breaker_failures_max=2, breaker_open_s=10.0), clock)
    for _ in range(2):
        assert gate.try_acquire()
        gate.release(None)  # cancelled calls count as unhealthy
    clock.advance(10.0)
    assert gate.try_acquire()  # the probe
    gate.release(ChargeStatus.UNKNOWN)
    assert gate.breaker.state is BreakerState.OPEN and gate.capacity() == 0
    clock.advance(9.0)
    assert not gate.try_acquire()
    clock.advance(1.0)
    assert gate.try_acquire()


async def test_with_a_shared_budget_the_gate_spends_only_leased_tokens() -> None:
    class Stock:
        def __init__(self) -> None:
            self.tokens = 3

        async def take(self, count_max: int) -> int:
            granted = min(count_max, self.tokens)
            self.tokens -= granted
            return granted

        async def give_back(self, count: int) -> None:
            self.tokens += count

    clock = ManualClock()
    budget = LeasedBucket(Stock(), lease_max=2, clock=clock)
    gate = ProcessorGate(GateLimits(rate_per_s=1000, burst=100), clock, budget=budget)
    assert gate.capacity() == 0 and not gate.try_acquire()  # a generous local rate means nothing: no lease yet
    await budget.lease()
    assert gate.capacity() == 2
    assert gate.try_acquire() and gate.try_acquire() and not gate.try_acquire()
    await budget.lease()  # the shared stock has one token left
    assert gate.try_acquire() and not gate.try_acquire()
