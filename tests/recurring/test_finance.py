"""Finance and recurring plans: list, pause, resume, cancel through the API and the dashboard; the report per
campaign (active plans, monthly recurring amount, installments succeeded / failed / skipped, churn)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.keys import Role
from tests.e2e.conftest import Surge, running_surge, surge_settings
from tests.finance.test_dashboard_donations import page, sign_in
from tests.recurring.conftest import FAST_SCHEDULER, create_plan, open_installments, plan_body
from tests.waiting import wait_until


@pytest.fixture
async def surge(database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = surge_settings(database_url, tmp_path, recurring_retry_days="", **FAST_SCHEDULER)
    async with running_surge(database_url, settings) as running:
        yield running


async def settled(surge: Surge, count: int) -> bool:
    made = await surge.pool.fetchval("SELECT count(*) FROM surge.recurring_installments")
    return made == count and await open_installments(surge.pool) == 0


async def test_finance_lists_pauses_resumes_and_cancels_plans_and_reads_the_report(surge: Surge) -> None:
    finance = surge.auth(Role.FINANCE)
    _, weekly = await create_plan(surge, plan_body(1_200, interval="week"))
    _, monthly = await create_plan(surge, plan_body(3_000, interval="month", first_name="Max"))
    _, failing = await create_plan(surge, plan_body(500, "pm_card_chargeDeclined", first_name="Al"))
    await wait_until(lambda: settled(surge, 3), what="the first period of each plan settled")

    listed = await (await surge.client.get("/v1/recurring/plans?status=active", headers=finance)).json()
    assert {p["id"] for p in listed["data"]} == {weekly["id"], monthly["id"]}
    paused = await surge.client.post(f"/v1/recurring/plans/{weekly['id']}/pause", headers=finance)
    assert (await paused.json())["status"] == "paused"
    again = await surge.client.post(f"/v1/recurring/plans/{weekly['id']}/pause", headers=finance)
    assert again.status == 409
    resumed = await surge.client.post(f"/v1/recurring/plans/{weekly['id']}/resume", headers=finance)
    assert (await resumed.json())["status"] == "active"
    assert (await surge.client.post(f"/v1/recurring/plans/{weekly['id']}/pause", headers=surge.auth())).status == 403

    (report,) = (await (await surge.client.get("/v1/reports/recurring", headers=finance)).json())["data"]
    assert report["active_plans"] == 2
    assert report["monthly_recurring_amount"] == 1_200 * 52 // 12 + 3_000
    assert report["installments"] == {"succeeded": 2, "failed": 1, "skipped": 0, "open": 0}

    cancelled = await surge.client.post(f"/v1/recurring/plans/{monthly['id']}/cancel", headers=finance)
    assert (await cancelled.json())["status"] == "cancelled"
    (report,) = (await (await surge.client.get("/v1/reports/recurring", headers=finance)).json())["data"]
    assert report["active_plans"] == 1 and report["cancelled_last_30_days"] == 2
    periods = await (
        await surge.client.get(f"/v1/recurring/plans/{failing['id']}/installments", headers=finance)
    ).json()
    assert periods["data"][0]["attempts"][0]["reason"] == "generic_decline"


async def test_the_dashboard_shows_plans_and_pauses_one(surge: Surge) -> None:
    _, plan = await create_plan(surge, plan_body(1_200))
    await wait_until(lambda: settled(surge, 1), what="the first period settled")
    cookie = await sign_in(surge, Role.FINANCE)
    listing = await page(surge, "/dashboard/recurring", cookie)
    assert plan["id"] in listing and "52.00 USD" in listing  # $12 a week as a monthly figure
    csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', listing)[1]  # type: ignore[index]
    paused = await surge.client.post(
        f"/dashboard/recurring/{plan['id']}/pause", data={"csrf": csrf}, headers=cookie, allow_redirects=False
    )
    assert paused.status == 303
    assert await surge.pool.fetchval("SELECT status FROM surge.recurring_plans") == "paused"
    forged = await surge.client.post(f"/dashboard/recurring/{plan['id']}/cancel", data={}, headers=cookie)
    assert forged.status == 403
    detail = await page(surge, f"/dashboard/recurring/{plan['id']}", cookie)
    assert "#1 succeeded" in detail
