"""HTTP plumbing for the Stripe adapter: one shared ``stripe.StripeClient`` on one aiohttp session, per-attempt
timeouts, the SDK's own idempotent retries, and a client-side rate limiter that keeps Surge under Stripe's
documented limits instead of collecting 429s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
import stripe

from adapters.stripe.config import StripeConfig


class TokenBucket:
    """Admits ``rate_per_second`` operations per second with bursts up to ``burst``.

    A caller that would wait longer than its ``wait_max_s`` is refused at once and takes no token, so a refusal
    means the request was never sent. Waiting callers reserve their token first (the level goes negative), which
    keeps admission first come, first served without a lock: nothing awaits between reading and updating.
    """

    def __init__(self, rate_per_second: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_second <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs a positive rate and a burst of at least 1, got {rate_per_second}")
        self._rate = rate_per_second
        self._burst = burst
        self._clock = clock
        self._tokens = burst
        self._updated = clock()

    async def acquire(self, wait_max_s: float) -> bool:
        wait_s = self._reserve(wait_max_s)
        if wait_s is None:
            return False
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        return True

    def _reserve(self, wait_max_s: float) -> float | None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        wait_s = max(0.0, (1 - self._tokens) / self._rate)
        if wait_s > wait_max_s:
            return None
        self._tokens -= 1
        return wait_s


class StripeConnection:
    """The adapter's connection to Stripe: ``client`` for calls, ``admit()`` before each one, ``close()`` once."""

    def __init__(self, config: StripeConfig) -> None:
        timeout = aiohttp.ClientTimeout(
            total=config.request_timeout_ms / 1000, connect=config.connect_timeout_ms / 1000
        )
        self.http_client = stripe.AIOHTTPClient(timeout=timeout)
        self.client = stripe.StripeClient(
            config.secret_key,
            base_addresses={"api": config.api_base},
            http_client=self.http_client,
            max_network_retries=config.max_network_retries,
        )
        rate = config.operations_per_second
        self._operations = TokenBucket(rate, burst=max(1.0, rate))
        search_rate = min(config.search_rate_limit_per_second, rate)
        self._searches = TokenBucket(search_rate, burst=max(1.0, search_rate))
        self._wait_max_s = config.rate_limit_wait_max_ms / 1000
        self._closed = False

    async def admit(self) -> bool:
        """True when one more API operation may be sent now (after a short bounded wait at most)."""
        return await self._operations.acquire(self._wait_max_s)

    async def admit_search(self) -> bool:
        """Search operations count against both the general and the Search API limit."""
        return await self._searches.acquire(self._wait_max_s) and await self.admit()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self.http_client.close_async()
