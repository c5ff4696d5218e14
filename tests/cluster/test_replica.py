"""Reads from a streaming replica (SURGE_REPLICA_URL, a pg_basebackup of the primary started by the test): reports,
the dashboard and listings come from it and say how stale they are; donations are written to the primary and show
up in the replica's report once replayed."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.api.replica import LAG_HEADER
from engine.keys import Role
from engine.settings import Settings
from tests.cluster.conftest import Services, served
from tests.e2e.conftest import donation
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


async def test_reports_are_read_from_the_replica_and_say_how_stale(services: Services, tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        database_url=services.direct_url,
        replica_url=services.replica_url,
        processor_rate_per_s=1000.0,
    )
    async with served(services, settings) as app:
        headers = {**app.auth(Role.FORM), "Idempotency-Key": "replica-1"}
        response = await app.client.post("/v1/donations", json=donation(amount=4200), headers=headers)
        assert response.status in (200, 201), await response.text()

        async def report_with_donation() -> tuple[str, dict] | None:
            answer = await app.client.get("/v1/reports/campaign-days", headers=app.auth(Role.FINANCE))
            assert answer.status == 200, await answer.text()
            body = await answer.json()
            return (answer.headers[LAG_HEADER], body) if "4200" in str(body) or "42.00" in str(body) else None

        lag, _ = await wait_until(report_with_donation, what="the donation in the replica's report", timeout=30)
        assert lag.isdigit(), f"{LAG_HEADER} should be the replica's lag in ms, got {lag!r}"

        # The donation API itself (money-deciding) reads the primary: no lag header there.
        answer = await app.client.get("/v1/donations?limit=1", headers=app.auth(Role.FINANCE))
        assert LAG_HEADER not in answer.headers

        # The replica really is a standby (writes refused there), so the header is not a primary's.
        import asyncpg

        connection = await asyncpg.connect(services.replica_url)
        try:
            assert await connection.fetchval("SELECT pg_is_in_recovery()")
        finally:
            await connection.close()


async def test_the_dashboard_page_says_it_was_read_from_the_replica(services: Services, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url=services.direct_url, replica_url=services.replica_url)
    async with served(services, settings) as app:
        login = await app.client.post("/dashboard/login", data={"key": app.keys[Role.FINANCE]}, allow_redirects=False)
        assert login.status == 303, await login.text()
        page = await app.client.get("/dashboard")
        text = await page.text()
        assert page.status == 200 and 'id="replica-lag"' in text and "Read from the replica" in text
