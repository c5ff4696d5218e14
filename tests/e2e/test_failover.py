"""Failover: when the primary processor keeps failing its breaker opens and new donations go to the next one."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from adapters.simulated import OutageWindow, SimulatedConfig, SimulatedProcessor
from engine.app import create_app
from engine.bootstrap import bootstrap
from engine.keys import Role
from tests.e2e.conftest import Surge, donation, surge_settings
from tests.waiting import wait_until


@pytest.fixture
async def surge_with_failover(database_url: str, tmp_path: Path) -> AsyncIterator[Surge]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=6)
    async with pool.acquire() as connection:
        keys = await bootstrap(connection, create_demo_campaign=True)
    now = time.time()
    primary = SimulatedProcessor(pool, SimulatedConfig(outages=(OutageWindow(now - 1, now + 3600),)), name="primary")
    backup = SimulatedProcessor(pool, SimulatedConfig(), name="backup")
    app = create_app(surge_settings(database_url, tmp_path), database_url, processors=[primary, backup])
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield Surge(client, pool, keys, app)
    finally:
        await client.close()
        await pool.close()


async def test_an_outage_at_the_primary_fails_over_to_the_backup(surge_with_failover: Surge) -> None:
    surge = surge_with_failover
    answers = [await surge.donate(donation(1000 + n, first_name=f"F{n}")) for n in range(10)]
    statuses = [status for status, _ in answers]
    # The primary answers "retry later" until its breaker opens (5 failures); from then on the backup charges.
    assert statuses[:5] == [202] * 5, statuses
    assert statuses[5:] == [201] * 5, statuses
    assert all(body["processor"] == "backup" for _, body in answers[5:])

    # The queued ones are retried by the queue runner, which skips the open breaker too.
    async def all_succeeded() -> bool:
        rows = await surge.pool.fetch("SELECT status FROM surge.donations")
        return all(row["status"] == "succeeded" for row in rows)

    await wait_until(all_succeeded, timeout=15, what="the queued donations charged at the backup")
    rows = await surge.pool.fetch("SELECT status, processor FROM surge.donations")
    assert [row["status"] for row in rows] == ["succeeded"] * 10
    assert {row["processor"] for row in rows} == {"backup"}
    finance = await surge.client.get(
        "/v1/ledger/accounts/clearing:backup:USD/balance", headers=surge.auth(Role.FINANCE)
    )
    assert finance.status == 200
    assert await surge.pool.fetchval("SELECT count(*) FROM simulator.charges WHERE status = 'succeeded'") == 10
