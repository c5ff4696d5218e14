"""The post-run audit passes on an honest run and catches each planted discrepancy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from engine.keys import Role
from loadtest.audit import audit_run
from tests.e2e.conftest import donation, start_surge, surge_settings


class Run:
    def __init__(self, client: Any, pool: asyncpg.Pool, keys: dict[Role, str]) -> None:
        self.client, self.pool, self.keys = client, pool, keys
        self.acknowledged: dict[str, int] = {}
        self.declined: set[str] = set()

    async def donate(self, key: str, amount: int, card: str = "pm_card_visa", **donor: Any) -> None:
        response = await self.client.post(
            "/v1/donations",
            json=donation(amount, card, **donor),
            headers={"Authorization": f"Bearer {self.keys[Role.FORM]}", "Idempotency-Key": key},
        )
        body = await response.json()
        if response.status in (201, 202):
            self.acknowledged[body["id"]] = amount
        elif response.status == 402:
            self.declined.add(body["error"]["donation"]["id"])

    async def audit(self, acknowledged: dict[str, int] | None = None) -> list[str]:
        async with self.pool.acquire() as connection:
            report = await audit_run(
                connection, self.acknowledged if acknowledged is None else acknowledged, self.declined
            )
        return report.problems


@pytest.fixture
async def run(database_url: str, tmp_path: Path) -> AsyncIterator[Run]:
    _, client, pool, keys = await start_surge(database_url, surge_settings(database_url, tmp_path))
    try:
        honest = Run(client, pool, keys)
        for n in range(4):
            await honest.donate(f"audit-{n}", 1000 + n, first_name=f"Ann{n}")
        await honest.donate("audit-declined", 500, "pm_card_chargeDeclined", first_name="Bob")
        assert len(honest.acknowledged) == 4 and len(honest.declined) == 1
        yield honest
    finally:
        await client.close()
        await pool.close()


async def test_an_honest_run_passes(run: Run) -> None:
    assert await run.audit() == []


async def test_an_acknowledged_donation_missing_from_the_ledger_is_caught(run: Run) -> None:
    problems = await run.audit({**run.acknowledged, "don_planted": 700})
    assert problems == ["don_planted: acknowledged with 2xx but not in surge.donations"]


async def test_an_acknowledged_amount_the_books_disagree_with_is_caught(run: Run) -> None:
    donation_id = next(iter(run.acknowledged))
    problems = await run.audit({**run.acknowledged, donation_id: 999_999})
    assert any(donation_id in p and "999999" in p for p in problems), problems


async def test_a_duplicate_charge_at_the_processor_is_caught(run: Run) -> None:
    donation_id = next(iter(run.acknowledged))
    async with run.pool.acquire() as connection:
        await connection.execute(
            """INSERT INTO simulator.charges (id, account, idempotency_key, donation_id, campaign, payment_method,
                                              amount, currency, fee, status)
               SELECT 'pi_sim_planted', account, 'planted-key', donation_id, campaign, payment_method, amount,
                      currency, fee, status
                 FROM simulator.charges WHERE donation_id = $1""",
            donation_id,
        )
    problems = await run.audit()
    assert any(f"{donation_id}: charged 2 times" in p for p in problems), problems


async def test_a_charge_the_ledger_never_heard_of_is_caught(run: Run) -> None:
    declined_id = next(iter(run.declined))
    async with run.pool.acquire() as connection:
        await connection.execute(
            """INSERT INTO simulator.charges (id, account, idempotency_key, donation_id, campaign, payment_method,
                                              amount, currency, fee, status)
               VALUES ('pi_sim_stray', 'simulated', 'stray-key', $1, 'demo', 'pm_card_visa', 500, 'USD', 0,
                       'succeeded')""",
            declined_id,
        )
    problems = await run.audit()
    assert any(f"{declined_id}: charged at the processor (pi_sim_stray) but not in the ledger" in p for p in problems)


async def test_a_donation_left_open_is_caught(run: Run) -> None:
    donation_id = next(iter(run.acknowledged))
    async with run.pool.acquire() as connection:
        # Pretend the queue never got to it: the donation is acknowledged but unsettled.
        await connection.execute("UPDATE surge.donations SET status = 'queued' WHERE id = $1", donation_id)
    problems = await run.audit()
    assert any(
        p.startswith(f"{donation_id}: acknowledged but still queued after the queue drained (pm_") for p in problems
    )
