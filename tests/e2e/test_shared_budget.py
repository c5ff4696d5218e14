"""One processor budget across engine processes: two `surge serve` processes (as two hosts would run them) with a
20/s shared budget, loaded well past it. The simulated processor's own record of charges, counted per second, never
passes the budget's stated bound — where two per-process buckets would send 40/s."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from engine.pipeline.budget import per_second_bound
from loadtest.engine_process import EngineProcess, prepare_database
from tests.e2e.conftest import donation
from tests.redis_server import redis_server
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

RATE_PER_S = 20
DONATIONS = 200
ENGINES = 2


async def charges_per_second(connection: asyncpg.Connection) -> list[int]:
    """The processor's record: charges created in each calendar second, in order."""
    rows = await connection.fetch(
        """SELECT date_trunc('second', created_at) AS second, count(*) AS charges
             FROM simulator.charges GROUP BY 1 ORDER BY 1"""
    )
    return [int(row["charges"]) for row in rows]


@pytest.mark.parametrize("store", ["postgres", "redis"])
async def test_two_engines_share_one_processor_budget(database_url: str, tmp_path: Path, store: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        redis_url = None
        if store == "redis":
            redis_url = f"unix://{await stack.enter_async_context(redis_server(tmp_path))}"
        await _two_engines_share_one_budget(database_url, tmp_path, redis_url)


async def _two_engines_share_one_budget(database_url: str, tmp_path: Path, redis_url: str | None) -> None:
    form_key = await prepare_database(database_url)
    environment = {
        **({"SURGE_REDIS_URL": redis_url} if redis_url else {}),
        "SURGE_SIM_PRESET": "default",  # answers at once: only the budget limits the rate
        "SURGE_PROCESSOR_RATE_PER_S": str(RATE_PER_S),
        "SURGE_PROCESSOR_BUDGET": "shared",
    }
    engines = [EngineProcess(database_url, tmp_path / f"engine-{n}.log", environment) for n in range(ENGINES)]
    try:
        await asyncio.gather(*(engine.start() for engine in engines))
        async with aiohttp.ClientSession() as session:

            async def donate(n: int) -> int:
                engine = engines[n % ENGINES]
                body = donation(amount=1000 + n, email=f"donor{n}@example.org")
                headers = {
                    "Authorization": f"Bearer {form_key}",
                    "Idempotency-Key": f"budget-{n}",
                    "X-Forwarded-For": f"10.1.{n // 250}.{n % 250}",
                }
                async with session.post(f"{engine.url}/v1/donations", json=body, headers=headers) as response:
                    return response.status

            statuses = await asyncio.gather(*(donate(n) for n in range(DONATIONS)))
        assert set(statuses) <= {200, 201, 202}, statuses
        connection = await asyncpg.connect(database_url)
        try:

            async def all_charged() -> bool:
                return await connection.fetchval("SELECT count(*) FROM simulator.charges") == DONATIONS

            await wait_until(all_charged, what="every donation charged", timeout=DONATIONS / RATE_PER_S * 3)
            per_second = await charges_per_second(connection)
            span_s = await connection.fetchval(
                "SELECT extract(epoch FROM max(created_at) - min(created_at))::float8 FROM simulator.charges"
            )
        finally:
            await connection.close()
    finally:
        await asyncio.gather(*(engine.stop() for engine in engines))
    bound = per_second_bound(RATE_PER_S, ENGINES)
    store = "Redis" if redis_url else "PostgreSQL"
    print(f"\ncharges/s, {store} budget of {RATE_PER_S}/s, {ENGINES} engines: {per_second} (bound {bound})")
    assert max(per_second) <= bound < 2 * RATE_PER_S  # per-process buckets would reach 2 x the rate
    # Over the whole run the rate is the budget's: the burst and the leases in hand are the only slack.
    slack = bound - RATE_PER_S + 1
    assert span_s >= (DONATIONS - slack) / RATE_PER_S, span_s
