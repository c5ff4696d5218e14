"""The processor's rate budget: one per process (``local``) or one for the whole deployment (``shared``).

``local``: each process keeps its own token bucket with ``rate ÷ workers`` — right for one host, wrong for several
(N hosts configured for a 100/s processor send N x 100/s). ``shared``: the bucket lives in PostgreSQL (one row of
``surge.processor_budgets`` per processor, refilled by elapsed server time in one UPDATE) or, when
``SURGE_REDIS_URL`` is set, in Redis (one hash, the same arithmetic in a Lua script); each process leases a few
tokens ahead of need (``toolkit.token_bucket.LeasedBucket``) so the gate never waits on a round trip. A process cut
off from the store gets no tokens and so charges nothing: the budget fails closed.

Measured on this machine (``python -m benchmarks.lease_cost``): one lease round trip costs ~625 us
in PostgreSQL (a row lock and an UPDATE of an unlogged row) against ~120 us in Redis. A process makes at most
1 / ``LEASE_INTERVAL_S`` = 50 leases a second per processor whatever its charge rate, so PostgreSQL costs ~3 % of
one connection per node — not worth another service to run, back up and fail over. PostgreSQL is the default;
Redis is there for deployments that already run it or that measure their database as the bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from engine.database import WORKER_RETRYABLE_ERRORS
from toolkit.token_bucket import LeasedBucket, SharedTokens

_logger = logging.getLogger(__name__)

BUDGET_KINDS = ("local", "shared")
LEASE_INTERVAL_S = 0.02  # how often a process tops its hand up: 50 round trips a second at most, per processor
LEASE_TTL_S = 0.25  # a leased token unspent after this goes back to the shared bucket
# A lease that takes longer (a store behind a cut link) is abandoned; the hand runs dry meanwhile: fail closed.
LEASE_TIMEOUT_S = 1.0


def shared_burst(rate_per_s: float) -> int:
    """The deployment's burst: a fifth of a second's budget, as the per-process bucket always had."""
    return max(1, int(rate_per_s / 5))


def lease_max(rate_per_s: float) -> int:
    """Tokens one process holds: two lease intervals' worth, so one busy process alone can still use the whole rate."""
    return max(2, math.ceil(2 * rate_per_s * LEASE_INTERVAL_S))


def per_second_bound(rate_per_s: float, processes: int) -> int:
    """The most charges the deployment can start in one calendar second: the bucket's own bound plus what each
    process may hold in hand (the audit's stated tolerance)."""
    return math.floor(rate_per_s) + shared_burst(rate_per_s) + processes * lease_max(rate_per_s)


class PostgresTokens:
    """The shared bucket as one row; ``take`` refills it by the server's elapsed time and grants in one UPDATE."""

    def __init__(self, pool: asyncpg.Pool, processor: str, rate_per_s: float, burst: int) -> None:
        self._pool = pool
        self.processor = processor
        self.rate_per_s = rate_per_s
        self.burst = burst

    async def take(self, count_max: int) -> int:
        granted = await self._pool.fetchval(
            """UPDATE surge.processor_budgets b
                  SET tokens = s.level - s.granted, updated_at = s.at
                 FROM (SELECT r.at, r.level, least($4::int, floor(r.level + 1e-9)::int) AS granted
                         FROM (SELECT c.at, least($3::float8, c.tokens + $2::float8
                                      * greatest(0, extract(epoch FROM c.at - c.updated_at))::float8) AS level
                                 FROM (SELECT tokens, updated_at, clock_timestamp() AS at
                                         FROM surge.processor_budgets WHERE processor = $1 FOR UPDATE) c) r) s
                WHERE b.processor = $1
            RETURNING s.granted""",
            self.processor,
            self.rate_per_s,
            float(self.burst),
            count_max,
        )
        if granted is None:  # first use, or the unlogged table was emptied by a crash: seed it full
            await self._pool.execute(
                """INSERT INTO surge.processor_budgets (processor, tokens) VALUES ($1, $2)
                   ON CONFLICT (processor) DO NOTHING""",
                self.processor,
                float(self.burst),
            )
            return 0
        return int(granted)

    async def give_back(self, count: int) -> None:
        await self._pool.execute(
            "UPDATE surge.processor_budgets SET tokens = tokens + $2 WHERE processor = $1", self.processor, count
        )


# KEYS[1] the bucket's hash; ARGV rate, burst, count wanted. Redis's own clock (TIME) refills it, as PostgreSQL's does.
_REDIS_TAKE = """
local now = redis.call('TIME')
local at = tonumber(now[1]) + tonumber(now[2]) / 1000000
local rate, burst, wanted = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, updated = tonumber(state[1]), tonumber(state[2])
if tokens == nil then tokens, updated = burst, at end
local level = math.min(burst, tokens + rate * math.max(0, at - updated))
local granted = math.min(wanted, math.floor(level + 1e-9))
redis.call('HSET', KEYS[1], 'tokens', tostring(level - granted), 'at', tostring(at))
return granted
"""


class RedisTokens:
    """The shared bucket as one Redis hash, taken from by a Lua script (atomic on the server)."""

    def __init__(self, client: Any, processor: str, rate_per_s: float, burst: int) -> None:
        self._client = client
        self.key = f"surge:processor_budget:{processor}"
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._take = client.register_script(_REDIS_TAKE)

    async def take(self, count_max: int) -> int:
        return int(await self._take(keys=[self.key], args=[self.rate_per_s, self.burst, count_max]))

    async def give_back(self, count: int) -> None:
        await self._client.hincrbyfloat(self.key, "tokens", count)


class SharedBudgets:
    """Leased buckets for every processor of this process and the loop that keeps them topped up."""

    def __init__(self, buckets: dict[str, LeasedBucket], store_errors: tuple[type[BaseException], ...]) -> None:
        self.buckets = buckets
        self._store_errors = (*WORKER_RETRYABLE_ERRORS, ConnectionError, TimeoutError, *store_errors)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="processor-budget-leases")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                async with asyncio.timeout(LEASE_TIMEOUT_S):
                    for bucket in self.buckets.values():
                        await bucket.lease()
                if failing:
                    _logger.info("processor budget store reachable again")
                failing = False
            except self._store_errors as error:
                if not failing:
                    _logger.warning("processor budget store unreachable (%s): no charges start until it is back", error)
                failing = True
            await asyncio.sleep(LEASE_INTERVAL_S)


@contextlib.asynccontextmanager
async def shared_budgets(
    pool: asyncpg.Pool, processors: list[str], rate_per_s: float, redis_url: str | None
) -> AsyncIterator[SharedBudgets]:
    """Leased buckets over PostgreSQL (or Redis with ``redis_url``), their lease loop running while inside."""
    client = None
    store_errors: tuple[type[BaseException], ...] = ()
    if redis_url:
        import redis.asyncio  # only deployments that chose Redis need the package loaded
        import redis.exceptions

        client = redis.asyncio.from_url(redis_url)
        store_errors = (redis.exceptions.RedisError,)
    burst = shared_burst(rate_per_s)
    buckets = {}
    for name in processors:
        shared: SharedTokens = (
            RedisTokens(client, name, rate_per_s, burst) if client else PostgresTokens(pool, name, rate_per_s, burst)
        )
        buckets[name] = LeasedBucket(shared, lease_max(rate_per_s), LEASE_TTL_S)
    budgets = SharedBudgets(buckets, store_errors)
    for bucket in buckets.values():  # a first hand before any charge is asked for (seeds the shared row if new)
        await bucket.lease()
        await bucket.lease()
    budgets.start()
    try:
        yield budgets
    finally:
        await budgets.stop()
        if client is not None:
            await client.aclose()
