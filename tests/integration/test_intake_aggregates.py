"""Intake's aggregate holds on a real PostgreSQL: the campaign's current limit, and row locks in one order."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest

from engine.bootstrap import DEMO_CAMPAIGN, bootstrap
from engine.campaigns import Campaign
from engine.pipeline.donation_request import new_donation_request
from engine.pipeline.donations import new_donation_id
from engine.pipeline.intake import IntakeItem, IntakeOutcome, VelocityLimits, commit_intake
from tests.e2e.conftest import donation


def intake_item(api_key_id: str, first_name: str, amount_minor: int, campaign: Campaign = DEMO_CAMPAIGN) -> IntakeItem:
    donation_id = new_donation_id()
    now = datetime.now(UTC)
    request = new_donation_request(
        amount_minor=amount_minor,
        currency="USD",
        campaign=campaign.slug,
        donor=donation(first_name=first_name)["donor"],
        payment_method="pm_card_visa",
        metadata=None,
        fingerprint=donation_id.encode(),
    )
    return IntakeItem(donation_id, api_key_id, donation_id, request, campaign, "queued", now, None, None, now)


@pytest.fixture
async def form_key_id(pool: asyncpg.Pool) -> str:
    async with pool.acquire() as connection:
        await bootstrap(connection, create_demo_campaign=True)
        key_id: str = await connection.fetchval("SELECT id FROM surge.api_keys WHERE role = 'form'")
    return key_id


async def intake(pool: asyncpg.Pool, items: list[IntakeItem]) -> list[IntakeOutcome]:
    async with pool.acquire() as connection, connection.transaction():
        return [r.outcome for r in await commit_intake(connection, items, VelocityLimits())]


async def settle_all(pool: asyncpg.Pool) -> None:
    """Turn every hold into a posted contribution (what settlement does for a success)."""
    await pool.execute(
        "UPDATE surge.contribution_aggregates SET posted_minor = posted_minor + held_minor, held_minor = 0"
    )


async def test_a_lowered_limit_judges_the_next_gift_of_a_donor_who_already_gave(
    pool: asyncpg.Pool, form_key_id: str
) -> None:
    assert await intake(pool, [intake_item(form_key_id, "Jane", 200_000)]) == [IntakeOutcome.ACCEPTED]
    await settle_all(pool)
    await pool.execute("UPDATE surge.campaigns SET contribution_limit_minor = 250_000 WHERE slug = 'demo'")
    # The in-memory campaign still says 350,000: the check must use the campaign's limit as it stands now.
    assert await intake(pool, [intake_item(form_key_id, "Jane", 60_000)]) == [IntakeOutcome.LIMIT_EXCEEDED]
    assert await intake(pool, [intake_item(form_key_id, "Jane", 50_000)]) == [IntakeOutcome.ACCEPTED]
    # Lowered below what the donor already gave: nothing more is admitted, and the row is still valid.
    await settle_all(pool)
    await pool.execute("UPDATE surge.campaigns SET contribution_limit_minor = 100_000 WHERE slug = 'demo'")
    assert await intake(pool, [intake_item(form_key_id, "Jane", 1)]) == [IntakeOutcome.LIMIT_EXCEEDED]
    assert await pool.fetchval("SELECT posted_minor FROM surge.contribution_aggregates") == 250_000


async def test_a_raised_limit_reaches_a_donor_who_already_gave(pool: asyncpg.Pool, form_key_id: str) -> None:
    assert await intake(pool, [intake_item(form_key_id, "Jane", 300_000)]) == [IntakeOutcome.ACCEPTED]
    await settle_all(pool)
    assert await intake(pool, [intake_item(form_key_id, "Jane", 100_000)]) == [IntakeOutcome.LIMIT_EXCEEDED]
    await pool.execute("UPDATE surge.campaigns SET contribution_limit_minor = 500_000 WHERE slug = 'demo'")
    assert await intake(pool, [intake_item(form_key_id, "Jane", 100_000)]) == [IntakeOutcome.ACCEPTED]
    assert await pool.fetchval("SELECT limit_minor FROM surge.contribution_aggregates") == 500_000


async def test_concurrent_batches_over_the_same_donors_in_opposite_orders_do_not_deadlock(
    pool: asyncpg.Pool, form_key_id: str
) -> None:
    names = [f"Donor{n:03d}" for n in range(40)]
    await intake(pool, [intake_item(form_key_id, name, 1) for name in names])  # the rows exist: locks, not inserts
    batches_per_round, rounds = 8, 5
    for _ in range(rounds):
        batches = [
            [intake_item(form_key_id, name, 1) for name in (names if n % 2 == 0 else names[::-1])]
            for n in range(batches_per_round)
        ]
        # A deadlock would surface as asyncpg.DeadlockDetectedError from one of the transactions.
        outcomes = await asyncio.gather(*(intake(pool, batch) for batch in batches))
        assert all(o == IntakeOutcome.ACCEPTED for batch in outcomes for o in batch)
    total = await pool.fetchval("SELECT sum(held_minor) FROM surge.contribution_aggregates")
    assert total == len(names) * (1 + batches_per_round * rounds)
