"""HTTP plumbing for the Stripe adapter: one shared ``stripe.StripeClient`` on one aiohttp session, per-attempt
timeouts, the SDK's own idempotent retries, and a client-side rate limiter that keeps Surge under Stripe's
documented limits instead of collecting 429s."""

from __future__ import annotations

import aiohttp
import stripe

from adapters.stripe.config import StripeConfig
from toolkit.token_bucket import TokenBucket


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
