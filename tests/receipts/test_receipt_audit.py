"""The load test's audit checks one receipt per acknowledged donation, and reports receipts sent and the relay's lag."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from loadtest.audit import audit_run
from tests.e2e.conftest import Surge, donation, running_surge, surge_settings
from tests.waiting import wait_until


class Run:
    """A small honest run: what the clients were told, as the load test records it."""

    def __init__(self, surge: Surge) -> None:
        self.surge, self.pool = surge, surge.pool
        self.acknowledged: dict[str, int] = {}
        self.declined: set[str] = set()

    async def donate(self, amount: int, card: str = "pm_card_visa", **donor: str) -> None:
        status, body = await self.surge.donate(donation(amount, card, **donor))
        if status in (201, 202):
            self.acknowledged[body["id"]] = amount
        elif status == 402:
            self.declined.add(body["error"]["donation"]["id"])

    async def audit(self) -> list[str]:
        async with self.pool.acquire() as connection:
            return (await audit_run(connection, self.acknowledged, self.declined)).problems


@pytest.fixture
async def run(database_url: str, tmp_path: Path) -> AsyncIterator[Run]:
    async with running_surge(database_url, surge_settings(database_url, tmp_path)) as surge:
        honest = Run(surge)
        for n in range(4):
            await honest.donate(1000 + n, first_name=f"Ann{n}")
        await honest.donate(500, "pm_card_chargeDeclined", first_name="Bob")
        assert len(honest.acknowledged) == 4 and len(honest.declined) == 1
        yield honest


async def sent(run: Run) -> bool:
    return bool(await run.pool.fetchval("SELECT count(*) = 4 AND bool_and(status = 'sent') FROM surge.receipts"))


async def test_an_honest_run_has_one_receipt_per_donation_and_reports_them(run: Run) -> None:
    await wait_until(lambda: sent(run), what="the four receipts sent")
    async with run.pool.acquire() as connection:
        report = await audit_run(connection, run.acknowledged, run.declined)
    assert report.problems == []
    assert report.checked["receipts_sent"] == 4 and report.checked["receipts_pending"] == 0
    assert report.checked["receipt_relay_lag_max_ms"] >= 0 and report.checked["receipt_oldest_pending_ms"] == 0


async def test_a_missing_receipt_is_caught(run: Run) -> None:
    missing = next(iter(run.acknowledged))
    await run.pool.execute("DELETE FROM surge.receipts WHERE donation_id = $1", missing)
    assert await run.audit() == [f"{missing}: acknowledged and succeeded but has 0 receipts"]


async def test_a_receipt_for_a_declined_donation_and_a_failed_receipt_are_caught(run: Run) -> None:
    [declined] = run.declined
    failed = next(iter(run.acknowledged))
    await run.pool.execute(
        """INSERT INTO surge.receipts (id, donation_id, kind, recipient)
           VALUES ('rcpt_planted', $1, 'donation', 'x@y.z')""",
        declined,
    )
    await run.pool.execute(
        "UPDATE surge.receipts SET status = 'failed', last_error = '550 no such mailbox' WHERE donation_id = $1",
        failed,
    )
    assert sorted(await run.audit()) == sorted(
        [f"{declined}: has a receipt but did not succeed", f"{failed}: its receipt failed: 550 no such mailbox"]
    )
