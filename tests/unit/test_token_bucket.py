"""The one token bucket, as its three callers use it: the processor gate, the Stripe client's bounded wait and the
simulated processor's rate cap — time driven by a manual clock."""

from __future__ import annotations

import asyncio

import pytest

from toolkit.clock import ManualClock
from toolkit.token_bucket import LeasedBucket, TokenBucket


def test_a_burst_then_the_rate() -> None:
    clock = ManualClock(start_s=100.0)
    bucket = TokenBucket(rate_per_s=10.0, burst=3, clock=clock)
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]
    clock.advance(0.05)
    assert bucket.try_take() is False  # half a token
    clock.advance(0.05)
    assert bucket.try_take() is True  # the second half arrived (0.05 s + 0.05 s is a hair short of 0.1 s)
    assert bucket.try_take() is False
    clock.advance(100.0)  # a long pause refills to the burst, not beyond
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]


def test_over_a_second_it_grants_the_rate() -> None:
    clock = ManualClock()
    bucket = TokenBucket(rate_per_s=100.0, burst=1, clock=clock)
    granted = 0
    for _ in range(1000):  # one try per millisecond for one second
        clock.advance(0.001)
        granted += bucket.try_take()
    assert granted == 100


def test_available_and_the_time_until_the_next_token() -> None:
    clock = ManualClock()
    bucket = TokenBucket(rate_per_s=4.0, burst=2, clock=clock)
    assert bucket.available() == 2 and bucket.seconds_until_token() == 0.0
    assert bucket.try_take() and bucket.try_take()
    assert bucket.available() == 0
    assert bucket.seconds_until_token() == pytest.approx(0.25)
    clock.advance(0.125)
    assert bucket.available() == 0
    assert bucket.seconds_until_token() == pytest.approx(0.125)
    clock.advance(0.125)
    assert bucket.available() == 1 and bucket.seconds_until_token() == 0.0


class SteppingClock(ManualClock):
    """A clock that can be set back, as a wall clock can (a monotonic one never is)."""

    def set(self, now_s: float) -> None:
        self._now_s = now_s


def test_a_clock_stepping_back_does_not_drain_or_fill_the_bucket() -> None:
    clock = SteppingClock(start_s=50.0)
    bucket = TokenBucket(rate_per_s=1.0, burst=1, clock=clock)
    assert bucket.try_take() is True
    clock.set(10.0)
    assert bucket.try_take() is False
    clock.set(50.5)
    assert bucket.try_take() is False
    clock.set(51.0)
    assert bucket.try_take() is True


async def test_acquire_admits_the_rate_and_refuses_beyond_the_wait() -> None:
    clock = ManualClock()
    bucket = TokenBucket(rate_per_s=10, burst=2, clock=clock)
    assert await bucket.acquire(wait_max_s=0)
    assert await bucket.acquire(wait_max_s=0)
    assert not await bucket.acquire(wait_max_s=0.05)  # the next token is 0.1 s away: refused, nothing taken
    clock.advance(0.1)
    assert await bucket.acquire(wait_max_s=0)
    waiting = asyncio.create_task(bucket.acquire(wait_max_s=0.2))  # reserves the token due at 0.2 s
    await clock.until_sleeping()
    assert not await bucket.acquire(wait_max_s=0.15)  # behind the reservation: 0.2 s away
    clock.advance(0.1)
    assert await asyncio.wait_for(waiting, 10)
    assert not bucket.try_take()  # the reserved token was spent by the waiter


async def test_waiters_are_admitted_first_come_first_served() -> None:
    clock = ManualClock()
    bucket = TokenBucket(rate_per_s=1, burst=1, clock=clock)
    assert await bucket.acquire(wait_max_s=0)
    admitted: list[int] = []

    async def caller(number: int) -> None:
        if await bucket.acquire(wait_max_s=5):
            admitted.append(number)

    callers = [asyncio.create_task(caller(n)) for n in range(3)]
    await clock.until_sleeping(3)  # they reserved the tokens due at 1 s, 2 s and 3 s
    clock.advance(1)
    await asyncio.wait_for(callers[0], 10)
    assert admitted == [0] and clock.sleepers == 2
    clock.advance(2)
    await asyncio.wait_for(asyncio.gather(*callers), 10)
    assert admitted == [0, 1, 2]


@pytest.mark.parametrize(("rate_per_s", "burst"), [(0, 1), (-1, 1), (1, 0), (1, 0.5)])
def test_rate_and_burst_are_validated(rate_per_s: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate_per_s, burst, ManualClock())


class _CountingShared:
    """A shared bucket with no clock of its own: it grants from a fixed stock and counts what comes back."""

    def __init__(self, stock: int) -> None:
        self.stock = stock
        self.given_back = 0

    async def take(self, count_max: int) -> int:
        granted = min(count_max, self.stock)
        self.stock -= granted
        return granted

    async def give_back(self, count: int) -> None:
        self.given_back += count
        self.stock += count


async def test_a_leased_bucket_spends_only_what_it_leased_and_gives_back_what_expired() -> None:
    clock = ManualClock()
    shared = _CountingShared(stock=5)
    bucket = LeasedBucket(shared, lease_max=3, ttl_s=0.25, clock=clock)
    assert bucket.available() == 0 and bucket.try_take() is False  # nothing in hand before a lease
    assert await bucket.lease() == 3 and shared.stock == 2
    assert bucket.try_take() is True and bucket.available() == 2
    assert await bucket.lease() == 1  # tops the hand up to lease_max from the stock left
    clock.advance(0.3)  # both leases expire unspent
    assert bucket.available() == 0 and bucket.try_take() is False
    assert await bucket.lease() == 3 and shared.given_back == 3
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]
