"""The scheduler charges each due period of a plan exactly once through the pipeline — one engine or two racing."""

from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from engine.keys import Role
from tests.e2e.conftest import Surge, running_surge, surge_settings
from tests.recurring.conftest import (
    FAST_SCHEDULER,
    audit_exactly_once,
    create_plan,
    open_installments,
    plan_body,
    weeks_ago,
)
from tests.waiting import WaitTimeout, wait_until

UNSETTLED = """SELECT i.plan_id, i.period, i.status, i.attempts, i.donation_id, i.next_attempt_at - now() AS wait,
                     d.status AS donation_status, d.next_attempt_at - now() AS donation_wait
                FROM surge.recurring_installments i LEFT JOIN surge.donations d ON d.id = i.donation_id
               WHERE i.status <> 'succeeded' ORDER BY 1, 2"""


def print_unsettled(rows: list[asyncpg.Record]) -> None:
    for row in rows:
        print(dict(row))


@pytest.fixture
async def surge(database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_surge(database_url, surge_settings(database_url, tmp_path, **FAST_SCHEDULER)) as running:
        yield running


async def settled(pool: asyncpg.Pool, installments: int) -> bool:
    count = await pool.fetchval("SELECT count(*) FROM surge.recurring_installments")
    return count == installments and await open_installments(pool) == 0


async def test_a_plan_of_three_weekly_gifts_due_now_is_charged_three_times_and_completes(
    surge: Surge, tmp_path: Path
) -> None:
    status, plan = await create_plan(surge, plan_body(1500, installments=3, start=weeks_ago(2)))
    assert status == 201, plan
    assert plan["payment_method"]["brand"] == "visa" and plan["payment_method"]["last4"] == "4242"
    await wait_until(lambda: settled(surge.pool, 3), what="three installments charged")
    assert await audit_exactly_once(surge.pool) == {"succeeded": 3}
    response = await surge.client.get(f"/v1/recurring/plans/{plan['id']}", headers=surge.auth(Role.FINANCE))
    assert (await response.json())["status"] == "completed"
    donations = await surge.pool.fetch(
        "SELECT amount_minor, status, payment_method, metadata FROM surge.donations ORDER BY created_at"
    )
    assert [d["amount_minor"] for d in donations] == [1500, 1500, 1500]
    assert all(d["payment_method"].startswith("offsession:cus_") for d in donations)
    # Each installment got its receipt through the receipts outbox, carrying the signed manage link; no other email.
    assert await surge.pool.fetchval("SELECT count(*) FROM surge.receipts WHERE kind = 'donation'") == 3

    async def receipts_sent() -> list[Path]:
        files = list((tmp_path / "outbox").glob("rcpt_*.eml"))
        return files if len(files) == 3 else []

    for mail in await wait_until(receipts_sent, what="three installment receipts"):
        message: Any = email.message_from_bytes(mail.read_bytes(), policy=email.policy.default)
        link = re.search(
            r"http://\S+(/recurring/manage/\S+)", message.get_body(preferencelist=("plain",)).get_content()
        )
        assert link is not None
        assert (await surge.client.get(link.group(1))).status == 200
    assert not list((tmp_path / "outbox").glob("notice_*.eml"))


async def test_creating_a_plan_twice_with_one_key_makes_one_plan(surge: Surge) -> None:
    headers = {**surge.auth(Role.FORM), "Idempotency-Key": "plan-once"}
    first = await surge.client.post("/v1/recurring/plans", json=plan_body(), headers=headers)
    second = await surge.client.post("/v1/recurring/plans", json=plan_body(), headers=headers)
    assert first.status == 201 and second.status == 200
    assert (await first.json())["id"] == (await second.json())["id"]
    assert await surge.pool.fetchval("SELECT count(*) FROM surge.recurring_plans") == 1


async def test_a_form_key_may_not_backdate_a_plan(surge: Surge) -> None:
    status, body = await create_plan(surge, plan_body(start=weeks_ago(3)), role=Role.FORM)
    assert status == 403 and body["error"]["param"] == "start"


async def test_two_engines_racing_charge_every_period_exactly_once(database_url: str, tmp_path: Path) -> None:
    settings = surge_settings(database_url, tmp_path, **FAST_SCHEDULER)
    async with running_surge(database_url, settings) as first, running_surge(database_url, settings) as second:
        second.keys, second.counter = first.keys, first.counter  # keys are made once per database
        plans = 30
        for n in range(plans):
            engine = first if n % 2 else second
            # Until cancelled, anchored three weeks ago: periods 0-3 are due now, both schedulers see them at once.
            status, body = await create_plan(engine, plan_body(1000 + n, start=weeks_ago(3), first_name=f"Racer{n}"))
            assert status == 201, body
        try:
            await wait_until(lambda: settled(first.pool, plans * 4), timeout=60, what="every due period settled")
        except WaitTimeout:
            print_unsettled(await first.pool.fetch(UNSETTLED))  # what a rare stall left behind, for diagnosis
            raise
        assert await audit_exactly_once(first.pool) == {"succeeded": plans * 4}
        attempts = await first.pool.fetchval("SELECT count(*) FROM surge.recurring_attempts")
        assert attempts == plans * 4
