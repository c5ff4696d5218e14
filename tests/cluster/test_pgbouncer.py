"""PgBouncer 1.18 in transaction mode in front of the engine: asyncpg with its statement cache off
(SURGE_DATABASE_PGBOUNCER=1), migrations over SURGE_DIRECT_DATABASE_URL. Donations go through end to end (intake,
gate with the shared budget, charge, settlement, ledger) with every pooled connection going through PgBouncer, and
the cost of unnamed statements is measured against the statement cache on a direct connection."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from engine.database import create_pool
from engine.keys import Role
from engine.settings import Settings
from ledger.check import check_ledger
from tests.cluster.conftest import Services, served
from tests.e2e.conftest import donation
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

DONATIONS = 60
QUERIES_TIMED = 1000


async def test_donations_through_pgbouncer_in_transaction_mode(services: Services, tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        database_url=services.pgbouncer_url.format(database="surge"),
        database_pgbouncer=True,
        direct_database_url=services.direct_url,
        processor_budget="shared",
        processor_rate_per_s=1000.0,
    )
    async with served(services, settings) as app:

        async def donate(n: int) -> int:
            headers = {**app.auth(Role.FORM), "Idempotency-Key": f"pgbouncer-{n}"}
            body = donation(amount=500 + n, email=f"pgb{n}@example.org")
            response = await app.client.post("/v1/donations", json=body, headers=headers)
            return response.status

        statuses = await asyncio.gather(*(donate(n) for n in range(DONATIONS)))
        assert set(statuses) <= {200, 201, 202}, statuses
        connection = await asyncpg.connect(services.direct_url)
        try:

            async def settled() -> bool:
                count = await connection.fetchval(
                    "SELECT count(*) FROM surge.donations WHERE status = 'succeeded' AND id IN "
                    "(SELECT donation_id FROM simulator.charges)"
                )
                return count == DONATIONS

            await wait_until(settled, what="every donation settled through PgBouncer", timeout=60)
            assert (await check_ledger(connection)).ok
        finally:
            await connection.close()


async def test_statement_cache_off_through_pgbouncer_costs(services: Services) -> None:
    """Prints what each query costs: through PgBouncer (cache off, the only way with 1.18) against direct."""

    async def per_query_us(url: str, **options: object) -> float:
        pool = await create_pool(url, size_max=2, size_min=1, **options)
        try:
            async with pool.acquire() as connection:
                query = "SELECT count(*) FROM surge.donations WHERE id = $1"
                await connection.fetchval(query, "x")
                started = time.perf_counter()
                for n in range(QUERIES_TIMED):
                    await connection.fetchval(query, f"d{n}")
                return (time.perf_counter() - started) / QUERIES_TIMED * 1e6
        finally:
            await pool.close()

    through = await per_query_us(services.pgbouncer_url.format(database="surge"), statement_cache_size=0)
    direct_cached = await per_query_us(services.direct_url)
    direct_uncached = await per_query_us(services.direct_url, statement_cache_size=0)
    print(
        f"\nper query: PgBouncer (cache off) {through:.0f} us; direct, cache on {direct_cached:.0f} us; "
        f"direct, cache off {direct_uncached:.0f} us"
    )
    assert through < 5000
