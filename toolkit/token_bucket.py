"""One token bucket: ``rate_per_s`` operations a second on average, bursts of up to ``burst``, read from a clock.

It serves three callers: the engine's processor gate (``try_take``, ``available``), the Stripe adapter's client-side
rate limit (``acquire``: wait a bounded time for a token) and the simulated processor's rate cap (``try_take``).

``acquire`` reserves its token before it waits (the level goes below zero), which keeps admission first come, first
served without a lock: nothing awaits between reading and updating the level. A caller that would wait longer than
its ``wait_max_s`` is refused at once and takes no token, so a refusal means the operation was never started.
"""

from __future__ import annotations

import math

from toolkit.clock import SYSTEM_CLOCK, Clock

# Keeps float sums such as 0.05 s + 0.05 s at 10/s from falling a hair short of a whole token.
_TOLERANCE = 1e-9


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
