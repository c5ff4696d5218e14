"""The shared processor budget's two stores, PostgreSQL (the default) and Redis: the same token-bucket arithmetic
on the store's own clock. What one lease costs in each: ``benchmarks/lease_cost.py``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from engine.database import migrate
from engine.pipeline.budget import PostgresTokens, RedisTokens
from tests.redis_server import redis_server
from tests.waiting import wait_until
from toolkit.token_bucket import SharedTokens

LEASES = 100


@pytest.fixture
async def migrated(pool: asyncpg.Pool) -> asyncpg.Pool:
    async with pool.acquire() as connection:
        await migrate(connection)
    return pool


@pytest.fixture
async def redis_client(tmp_path: Path) -> AsyncIterator[object]:
    import redis.asyncio

    async with redis_server(tmp_path) as socket_path:
        client = redis.asyncio.Redis(unix_socket_path=str(socket_path))
        await wait_until(client.ping, what="redis-server answering PING", timeout=10)
        yield client
        await client.aclose()


async def _grants_burst_then_rate(shared: SharedTokens) -> None:
    drained = await shared.take(100)  # PostgreSQL's first call seeds the row and grants nothing; Redis's, the burst
    while (granted := await shared.take(100)) > 0:
        drained += granted
    assert 4 <= drained <= 5  # the burst (plus a hair of refill while draining)
    # Then the rate: wait until five more tokens have come (the store refills by its own clock), and time it.
    started = time.monotonic()
    received = 0

    async def five_more() -> bool:
        nonlocal received
        received += await shared.take(100)
        return received >= 5

    await wait_until(five_more, what="five more tokens at 10/s", interval=0.01)
    elapsed = time.monotonic() - started
    assert received <= 6  # a take hands out only what has accrued
    assert 0.35 <= elapsed <= 1.0, elapsed  # five at 10/s: half a second, give or take a boundary each side
    await shared.give_back(2)
    assert await shared.take(100) >= 2


async def test_postgres_tokens_grant_the_burst_then_the_rate(migrated: asyncpg.Pool) -> None:
    await _grants_burst_then_rate(PostgresTokens(migrated, "simulated", rate_per_s=10.0, burst=5))


async def test_redis_tokens_grant_the_burst_then_the_rate(redis_client: object) -> None:
    await _grants_burst_then_rate(RedisTokens(redis_client, "simulated", rate_per_s=10.0, burst=5))


async def _leases_granted(shared: SharedTokens) -> list[int]:
    await shared.take(1)  # PostgreSQL's first call seeds the row
    return [await shared.take(2) for _ in range(LEASES)]


async def test_postgres_and_redis_grant_every_lease_in_full_while_tokens_last(
    migrated: asyncpg.Pool, redis_client: object
) -> None:
    # What a lease costs is measured by benchmarks/lease_cost.py, not asserted here.
    postgres = PostgresTokens(migrated, "leased", rate_per_s=1e6, burst=1000)
    redis = RedisTokens(redis_client, "leased", rate_per_s=1e6, burst=1000)
    assert await _leases_granted(postgres) == [2] * LEASES
    assert await _leases_granted(redis) == [2] * LEASES
