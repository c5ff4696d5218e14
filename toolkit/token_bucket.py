"""One token bucket: ``rate_per_s`` operations a second on average, bursts of up to ``burst``, read from a clock.

It serves three callers: the engine's processor gate (``try_take``, ``available``), the Stripe adapter's client-side
rate limit (``acquire``: wait a bounded time for a token) and the simulated processor's rate cap (``try_take``).

Several processes (engine hosts) that must share one budget cannot each run a ``TokenBucket``: N of them send N times
the rate. The bucket then lives in a shared store (``SharedTokens``: one row in PostgreSQL, one key in Redis, the same
refill arithmetic), and each process holds a ``LeasedBucket``: a few tokens leased from it ahead of need, so the hot
path (``try_take``) stays synchronous and costs no round trip. Both kinds satisfy ``Budget``, which is all the gate
sees. A leased token not spent within ``ttl_s`` is given back, so a process that dies or idles keeps at most
``lease_max`` tokens out of circulation, and the whole deployment never spends more than, in any second,
``rate_per_s + burst + processes * lease_max`` (a token bucket's own calendar-second bound plus what is in hand).

``acquire`` reserves its token before it waits (the level goes below zero), which keeps admission first come, first
served without a lock: nothing awaits between reading and updating the level. A caller that would wait longer than
its ``wait_max_s`` is refused at once and takes no token, so a refusal means the operation was never started.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

from toolkit.clock import SYSTEM_CLOCK, Clock

# Keeps float sums such as 0.05 s + 0.05 s at 10/s from falling a hair short of a whole token.
_TOLERANCE = 1e-9


class Budget(Protocol):
    """What a rate-limited caller sees of a bucket, local or shared: no I/O, so it can be asked on every request."""

    def available(self) -> int:
        """Whole tokens that could be taken now."""
        ...

    def try_take(self) -> bool:
        """Spend one token if there is one now; False means rate limited."""
        ...


class SharedTokens(Protocol):
    """A token bucket whose level lives in a store several processes reach (refilled by the store's own clock)."""

    async def take(self, count_max: int) -> int:
        """Take up to ``count_max`` whole tokens now; how many were granted (0 when the bucket is empty)."""
        ...

    async def give_back(self, count: int) -> None:
        """Return tokens taken but not spent (the level stays capped at the burst by the next refill)."""
        ...


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: float, clock: Clock = SYSTEM_CLOCK) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate_per_s > 0 and burst >= 1, got {rate_per_s} and {burst}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated_s = clock.monotonic()

    def available(self) -> int:
        """Whole tokens in the bucket now."""
        self._refill()
        return max(0, math.floor(self._tokens + _TOLERANCE))

    def seconds_until_token(self) -> float:
        """How long until one token is in the bucket (0 when one is there now)."""
        self._refill()
        missing = 1 - self._tokens
        return 0.0 if missing <= _TOLERANCE else missing / self.rate_per_s

    def try_take(self) -> bool:
        """Spend one token if there is one now; False means rate limited."""
        return self._reserve(0.0) is not None

    async def acquire(self, wait_max_s: float) -> bool:
        """Take a token, waiting for it at most ``wait_max_s``; False (at once, nothing taken) if it is further off."""
        wait_s = self._reserve(wait_max_s)
        if wait_s is None:
            return False
        if wait_s > 0:
            await self._clock.sleep(wait_s)
        return True

    def _reserve(self, wait_max_s: float) -> float | None:
        wait_s = self.seconds_until_token()
        if wait_s > wait_max_s:
            return None
        # A token taken now leaves no debt below zero (the tolerance may have granted a hair less than one token);
        # a reservation for later does: the level stays negative until the refill catches up.
        self._tokens = self._tokens - 1 if wait_s > 0 else max(0.0, self._tokens - 1)
        return wait_s

    def _refill(self) -> None:
        now_s = self._clock.monotonic()
        elapsed_s = max(0.0, now_s - self._updated_s)  # a clock that steps back must not drain the bucket
        self._tokens = min(float(self.burst), self._tokens + elapsed_s * self.rate_per_s)
        self._updated_s = max(self._updated_s, now_s)


class LeasedBucket:
    """This process's share of a ``SharedTokens`` bucket: up to ``lease_max`` tokens in hand, each spendable for
    ``ttl_s`` after it was leased. ``lease`` (called by the owner's background loop every few milliseconds) gives back
    what expired and tops the hand up; ``try_take`` and ``available`` only look at the hand."""

    def __init__(self, shared: SharedTokens, lease_max: int, ttl_s: float = 0.25, clock: Clock = SYSTEM_CLOCK) -> None:
        if lease_max < 1 or ttl_s <= 0:
            raise ValueError(f"a leased bucket needs lease_max >= 1 and ttl_s > 0, got {lease_max} and {ttl_s}")
        self.shared = shared
        self.lease_max = lease_max
        self.ttl_s = ttl_s
        self._clock = clock
        self._leases: deque[list[float]] = deque()  # [expires_at_s, tokens left], oldest first
        self._held = 0
        self._expired = 0  # expired, not yet given back

    def available(self) -> int:
        self._expire()
        return self._held

    def try_take(self) -> bool:
        self._expire()
        if not self._held:
            return False
        oldest = self._leases[0]
        oldest[1] -= 1
        if not oldest[1]:
            self._leases.popleft()
        self._held -= 1
        return True

    async def lease(self) -> int:
        """Give back expired tokens, then take what tops the hand up to ``lease_max``; how many were granted."""
        self._expire()
        if self._expired:
            expired, self._expired = self._expired, 0
            await self.shared.give_back(expired)
        wanted = self.lease_max - self._held
        if wanted <= 0:
            return 0
        granted = await self.shared.take(wanted)
        if granted:
            self._leases.append([self._clock.monotonic() + self.ttl_s, float(granted)])
            self._held += granted
        return granted

    def _expire(self) -> None:
        now_s = self._clock.monotonic()
        while self._leases and self._leases[0][0] <= now_s:
            _, left = self._leases.popleft()
            self._held -= int(left)
            self._expired += int(left)
