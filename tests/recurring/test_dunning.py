"""Failed renewals: soft declines retried on the schedule then the plan cancelled; hard declines never retried;
an installment past the donor's election limit skipped with the reason, the plan going on or stopping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.keys import Role
from engine.recurring.dunning import RetrySchedule
from tests.e2e.conftest import Surge, running_surge, surge_settings
from tests.recurring.conftest import (
    FAST_SCHEDULER,
    audit_exactly_once,
    create_plan,
    open_installments,
    plan_body,
    weeks_ago,
)
from tests.waiting import wait_until

# Two retries, about 0.2 s apart: the schedule's shape, at test speed.
QUICK_RETRIES = "0.000002,0.000002"


@pytest.fixture
async def surge(database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = surge_settings(database_url, tmp_path, recurring_retry_days=QUICK_RETRIES, **FAST_SCHEDULER)
    async with running_surge(database_url, settings) as running:
        yield running


async def plan_state(surge: Surge, plan_id: str) -> dict[str, Any]:
    response = await surge.client.get(f"/v1/recurring/plans/{plan_id}", headers=surge.auth(Role.FINANCE))
    return dict(await response.json())


async def installments(surge: Surge, plan_id: str) -> list[dict[str, Any]]:
    response = await surge.client.get(f"/v1/recurring/plans/{plan_id}/installments", headers=surge.auth(Role.FINANCE))
    return list((await response.json())["data"])


async def until_final(surge: Surge, plan_id: str, *statuses: str) -> dict[str, Any]:
    async def final() -> dict[str, Any] | None:
        plan = await plan_state(surge, plan_id)
        return plan if plan["status"] in statuses and await open_installments(surge.pool) == 0 else None

    return await wait_until(final, what=f"plan {plan_id} {statuses}")


def test_the_default_schedule_is_four_retries_over_about_three_weeks() -> None:
    schedule = RetrySchedule()
    assert len(schedule.delays_days) == 4 and 18 <= sum(schedule.delays_days) <= 24
    assert schedule.decide(1, "insufficient_funds").next == "retry"
    assert schedule.decide(5, "insufficient_funds").reason == "retries_exhausted:insufficient_funds"
    assert schedule.decide(1, "stolen_card").reason == "hard_decline:stolen_card"


async def test_a_soft_decline_is_retried_then_the_plan_is_cancelled(surge: Surge) -> None:
    status, plan = await create_plan(surge, plan_body(payment_method="pm_card_chargeDeclinedInsufficientFunds"))
    assert status == 201, plan
    final = await until_final(surge, plan["id"], "cancelled")
    assert final["cancel_reason"] == "retries_exhausted:insufficient_funds"
    (period,) = await installments(surge, plan["id"])
    assert period["status"] == "failed"
    assert [(a["attempt"], a["outcome"], a["reason"]) for a in period["attempts"]] == [
        (1, "declined", "insufficient_funds"),
        (2, "declined", "insufficient_funds"),
        (3, "declined", "insufficient_funds"),
    ]
    assert len({a["donation"] for a in period["attempts"]}) == 3  # each attempt its own donation
    kinds = {(n["audience"], n["kind"]) for n in await notices(surge)}
    assert {("donor", "payment_failed_1"), ("donor", "payment_failed_2"), ("donor", "plan_cancelled")} <= kinds
    assert ("campaign", "plan_cancelled") in kinds


async def test_a_hard_decline_is_never_retried(surge: Surge) -> None:
    status, plan = await create_plan(surge, plan_body(payment_method="pm_card_chargeDeclinedStolenCard"))
    assert status == 201, plan
    final = await until_final(surge, plan["id"], "cancelled")
    assert final["cancel_reason"] == "hard_decline:stolen_card"
    (period,) = await installments(surge, plan["id"])
    assert len(period["attempts"]) == 1


async def test_off_session_authentication_is_a_soft_decline(surge: Surge) -> None:
    status, plan = await create_plan(surge, plan_body(payment_method="pm_card_authenticationRequired"))
    assert status == 201, plan
    await until_final(surge, plan["id"], "cancelled")
    (period,) = await installments(surge, plan["id"])
    assert {a["reason"] for a in period["attempts"]} == {"authentication_required"}
    assert await surge.pool.fetchval("SELECT count(*) FROM surge.donations WHERE status = 'pending'") == 0


async def notices(surge: Surge) -> list[dict[str, Any]]:
    response = await surge.client.get("/v1/recurring/notices", headers=surge.auth(Role.FINANCE))
    return list((await response.json())["data"])


@pytest.mark.parametrize("on_limit", ["continue", "stop"])
async def test_an_installment_past_the_election_limit_is_skipped(surge: Surge, on_limit: str) -> None:
    response = await surge.client.put(
        "/v1/campaigns/demo/recurring", json={"on_limit": on_limit}, headers=surge.auth(Role.ADMIN)
    )
    assert response.status == 200
    # $2,000 a week against the $3,500 limit: period 0 fits, period 1 would pass it.
    status, plan = await create_plan(surge, plan_body(200_000, installments=2, start=weeks_ago(1)))
    assert status == 201, plan
    final = await until_final(surge, plan["id"], "completed" if on_limit == "continue" else "cancelled")
    first, second = await installments(surge, plan["id"])
    assert first["status"] == "succeeded"
    assert (second["status"], second["reason"]) == ("skipped", "contribution_limit_exceeded")
    if on_limit == "stop":
        assert final["cancel_reason"] == "limit_reached"
    told = {(n["audience"], n["kind"]) for n in await notices(surge)}
    assert {("donor", "installment_skipped"), ("campaign", "installment_skipped")} <= told
    assert await audit_exactly_once(surge.pool) == {"succeeded": 1, "skipped": 1}
    aggregate = await surge.pool.fetchval("SELECT posted_minor + held_minor FROM surge.contribution_aggregates")
    assert aggregate == 200_000


async def test_a_card_renewed_by_the_processor_is_applied_and_the_period_retried_at_once(
    database_url: str, tmp_path: Path
) -> None:
    # The default schedule (days between retries): only the card update can make the retry come at once.
    settings = surge_settings(database_url, tmp_path, **FAST_SCHEDULER)
    async with running_surge(database_url, settings) as surge:
        status, plan = await create_plan(surge, plan_body(payment_method="pm_card_chargeDeclinedExpiredCard"))
        assert status == 201, plan

        async def charged() -> list[dict[str, Any]] | None:
            periods = await installments(surge, plan["id"])
            return periods if periods and periods[0]["status"] == "succeeded" else None

        (period,) = await wait_until(charged, what="the period charged on the renewed card")
        assert (await plan_state(surge, plan["id"]))["status"] == "active"
        assert [(a["outcome"], a["reason"]) for a in period["attempts"]] == [
            ("declined", "expired_card"),
            ("succeeded", None),
        ]
        card = await surge.pool.fetchrow("SELECT payment_method_reference, exp_year FROM surge.saved_payment_methods")
        assert tuple(card) == ("pm_card_visa", 2036)
