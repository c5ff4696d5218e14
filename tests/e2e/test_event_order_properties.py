"""Property: whatever order a donation's processor events arrive in, however often each is delivered and whichever
of them race, the books end as they do when the events arrive once, in order.

Two donations per example, alike but for their donor: one receives its events in order, the other a permuted,
duplicated sequence (consecutive deliveries sometimes concurrently). Events are built as the adapter would parse
them and given to ``process_event`` on the served app's database, while the app's own sweeper runs.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.base import EventType, ProcessorEvent
from engine.api.state import ACCOUNTS
from engine.payments.processor_events import process_event
from ledger.check import check_ledger
from ledger.money import Money
from tests.e2e.conftest import Surge, donation, start_surge, surge_settings
from tests.e2e.test_event_order import PENDING_CARD
from tests.waiting import wait_until

_examples = itertools.count()
AMOUNT_MINOR = 10_000
EVENT_COUNT = 4  # the charge's outcome, a refund made at the processor, a dispute opened, the dispute closed

# A delivery: (which event, sent together with the previous delivery or after it).
deliveries = st.lists(st.tuples(st.integers(0, EVENT_COUNT - 1), st.booleans()), max_size=6)


@pytest.fixture
async def declining_surge(database_url: str, tmp_path: Path) -> AsyncIterator[Surge]:
    # Many declined charges from one test client: the card-testing check is not what is tested here.
    settings = surge_settings(database_url, tmp_path, velocity_declines_max=1_000_000)
    server, client, pool, keys = await start_surge(database_url, settings)
    try:
        yield Surge(client, pool, keys, server.app)
    finally:
        await client.close()
        await pool.close()


def events_for(gift: dict[str, Any], tag: str, charge_succeeds: bool, dispute_won: bool) -> list[ProcessorEvent]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    common = {"processor_reference": gift["processor_reference"], "donation_id": gift["id"]}
    dispute = f"dp_{tag}"
    return [
        ProcessorEvent(
            f"evt_{tag}_charge",
            EventType.CHARGE_SUCCEEDED if charge_succeeds else EventType.CHARGE_FAILED,
            start,
            fee=Money(250, "USD") if charge_succeeds else None,
            decline_code=None if charge_succeeds else "card_declined",
            **common,
        ),
        ProcessorEvent(
            f"evt_{tag}_refund",
            EventType.CHARGE_REFUNDED,
            start + timedelta(seconds=1),
            amount=Money(1_000, "USD"),
            object_id=f"re_{tag}",
            **common,
        ),
        ProcessorEvent(
            f"evt_{tag}_dispute",
            EventType.DISPUTE_CREATED,
            start + timedelta(seconds=2),
            amount=Money(2_000, "USD"),
            fee=Money(1_500, "USD"),
            object_id=dispute,
            **common,
        ),
        ProcessorEvent(
            f"evt_{tag}_closed",
            EventType.DISPUTE_WON if dispute_won else EventType.DISPUTE_LOST,
            start + timedelta(seconds=3),
            object_id=dispute,
            **common,
        ),
    ]


async def deliver(surge: Surge, event: ProcessorEvent) -> None:
    async with surge.pool.acquire() as connection:
        await process_event(connection, surge.app[ACCOUNTS], "simulated", event)


async def pending_gift(surge: Surge, donor: str) -> dict[str, Any]:
    status, gift = await surge.donate(donation(AMOUNT_MINOR, PENDING_CARD, first_name=donor))
    assert status in (201, 202), gift
    reference = await surge.pool.fetchval("SELECT processor_reference FROM surge.donations WHERE id = $1", gift["id"])
    assert reference is not None
    return {**gift, "processor_reference": reference}


async def books(surge: Surge, gift: dict[str, Any], tag: str) -> dict[str, Any]:
    """What the books say about one donation, in terms that do not name it (so that two donations compare)."""
    row = await surge.pool.fetchrow(
        """SELECT d.status, d.fee_minor, d.refunded_minor, d.disputed_minor, a.posted_minor, a.held_minor
             FROM surge.donations d
             JOIN surge.contribution_aggregates a USING (campaign, election, donor_key)
            WHERE d.id = $1""",
        gift["id"],
    )
    postings = await surge.pool.fetch(
        """SELECT a.code, sum(p.amount) AS amount
             FROM ledger.entries e
             JOIN ledger.postings p ON p.entry_id = e.id
             JOIN ledger.accounts a ON a.id = p.account_id
            WHERE (e.metadata->>'donation' = $1 OR e.reference = $2) AND NOT p.pending
            GROUP BY a.code""",
        gift["id"],
        f"dispute-won:dp_{tag}",
    )
    outcomes = await surge.pool.fetch(
        "SELECT outcome FROM surge.processor_events WHERE event_id LIKE $1 ORDER BY event_id", f"evt_{tag}_%"
    )
    return {
        "donation": dict(row),
        "ledger": {r["code"]: r["amount"] for r in postings if r["amount"]},
        "outcomes": sorted(r["outcome"] for r in outcomes),
    }


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    order=st.permutations(range(EVENT_COUNT)),
    extra=deliveries,
    charge_succeeds=st.booleans(),
    dispute_won=st.booleans(),
)
async def test_any_order_and_any_redelivery_end_in_the_same_books(
    declining_surge: Surge, order: list[int], extra: list[tuple[int, bool]], charge_succeeds: bool, dispute_won: bool
) -> None:
    surge = declining_surge
    example = next(_examples)
    in_order, shuffled = f"{example}a", f"{example}b"
    reference_gift = await pending_gift(surge, f"Ordered{example}")
    tested_gift = await pending_gift(surge, f"Shuffled{example}")
    for event in events_for(reference_gift, in_order, charge_succeeds, dispute_won):
        await deliver(surge, event)

    events = events_for(tested_gift, shuffled, charge_succeeds, dispute_won)
    sequence = [(index, False) for index in order]
    for position, (index, together) in enumerate(extra):
        sequence.insert(position * 7 % (len(sequence) + 1), (index, together))
    batch: list[ProcessorEvent] = []
    for index, together in sequence:
        if batch and not together:
            await asyncio.gather(*(deliver(surge, event) for event in batch))
            batch = []
        batch.append(events[index])
    await asyncio.gather(*(deliver(surge, event) for event in batch))

    async def settled() -> bool:
        # A parked event the app's sweeper held while the unblocking event committed is applied by the sweeper.
        waiting = await surge.pool.fetchval(
            "SELECT count(*) FROM surge.parked_events WHERE resolved_at IS NULL AND event_id LIKE $1",
            f"evt_{shuffled}_%",
        )
        return waiting == 0

    await wait_until(settled, what="every parked event of the shuffled donation to be resolved")
    expected = await books(surge, reference_gift, in_order)
    assert await books(surge, tested_gift, shuffled) == expected
    assert expected["outcomes"] == (
        ["applied"] * EVENT_COUNT if charge_succeeds else ["applied"] + ["not_applicable"] * 3
    )
    async with surge.pool.acquire() as connection:
        assert (await check_ledger(connection)).ok
