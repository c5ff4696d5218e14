"""A `surge serve` SIGKILLed while its scheduler charges installments: after a restart every due period is charged
exactly once (none twice, none lost), and the ledger agrees."""

from __future__ import annotations

import signal

import aiohttp
import asyncpg
import pytest

from engine.keys import Role
from ledger.check import check_ledger
from tests.e2e.test_processes import engine_process, free_port, prepare
from tests.recurring.conftest import audit_exactly_once, open_installments, plan_body, weeks_ago
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

SLOW = {
    "SURGE_SIM_LATENCY_MS_MEDIAN": "300",
    "SURGE_SIM_LATENCY_MS_P99": "900",
    "SURGE_CHARGE_TIMEOUT_MS": "2000",
    "SURGE_PROCESSOR_RATE_PER_S": "1000",
    "SURGE_RECURRING_POLL_MS": "50",
}
PLANS = 40
PERIODS_DUE = 4  # anchored three weeks ago, weekly, until cancelled: periods 0-3 are due


async def test_sigkill_mid_renewals_charges_each_period_exactly_once(database_url: str) -> None:
    keys = await prepare(database_url)
    port = free_port()
    connection = await asyncpg.connect(database_url)
    try:

        async def succeeded() -> int:
            return int(
                await connection.fetchval(
                    "SELECT count(*) FROM surge.recurring_installments WHERE status = 'succeeded'"
                )
            )

        async with (
            engine_process(database_url, port, environment=SLOW) as engine,
            aiohttp.ClientSession() as session,
        ):
            for n in range(PLANS):
                async with session.post(
                    f"http://127.0.0.1:{port}/v1/recurring/plans",
                    json=plan_body(500 + n, start=weeks_ago(3), first_name=f"Killed{n}"),
                    headers={"Authorization": f"Bearer {keys[Role.FINANCE]}", "Idempotency-Key": f"plan-{n}"},
                ) as response:
                    assert response.status == 201, await response.text()
            await wait_until(lambda: succeeded_at_least(succeeded, 20), what="some installments charged")
            engine.send_signal(signal.SIGKILL)
        killed_with = await succeeded()
        in_flight = await connection.fetchval(
            "SELECT count(*) FROM surge.recurring_installments WHERE status = 'charging'"
        )
        assert killed_with < PLANS * PERIODS_DUE, "the kill should land mid-run"
        assert in_flight > 0, "the kill should leave installments leased (charging)"
        print(f"killed with {killed_with} succeeded, {in_flight} leased")

        async with engine_process(database_url, port, environment=SLOW):

            async def all_settled() -> bool:
                count = await connection.fetchval("SELECT count(*) FROM surge.recurring_installments")
                undecided = await connection.fetchval(
                    "SELECT count(*) FROM surge.donations WHERE status IN ('queued', 'charging', 'pending')"
                )
                return count == PLANS * PERIODS_DUE and await open_installments(connection) == 0 and undecided == 0

            await wait_until(all_settled, timeout=120, what="every due period settled after the restart")
        assert await audit_exactly_once(connection) == {"succeeded": PLANS * PERIODS_DUE}, in_flight
        assert await connection.fetchval("SELECT coalesce(sum(held_minor), 0) FROM surge.contribution_aggregates") == 0
        assert (await check_ledger(connection)).ok
    finally:
        await connection.close()


async def succeeded_at_least(count, minimum: int) -> bool:  # type: ignore[no-untyped-def]
    return await count() >= minimum
