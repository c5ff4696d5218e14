"""The outbox on a real database: a receipt row is written by the transaction that settles a donation as succeeded
(one statement for the whole batch) or books a refund, and only then; at most one per (donation, kind, refund); and
relays claiming at once never take the same receipt."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.api.state import ACCOUNTS
from engine.payments.processor_events import process_event
from engine.pipeline.settlement import Settlement, commit_settlements
from engine.receipts import outbox
from tests.e2e.conftest import Surge, donation, running_surge, surge_settings
from tests.e2e.test_refund_attribution import refund_event, succeeded_gift
from tests.waiting import wait_until


@pytest.fixture
async def surge(database_url: str, tmp_path: Path) -> AsyncIterator[Surge]:
    # The relay looks once at start-up and then not for a minute: the tests see the outbox as written.
    settings = surge_settings(database_url, tmp_path, receipt_poll_interval_ms=60_000)
    async with running_surge(database_url, settings) as running:
        yield running


async def pending_donations(surge: Surge, count: int) -> list[str]:
    """Donations waiting for the donor's authentication: nothing settles them but the test."""
    ids = []
    for number in range(count):
        status, gift = await surge.donate(donation(1_000 + number, "pm_card_threeDSecureRequired"))
        assert status == 202, gift
        ids.append(gift["id"])

    async def all_pending() -> bool:
        statuses = await surge.pool.fetch("SELECT status FROM surge.donations WHERE id = ANY($1::text[])", ids)
        return [row["status"] for row in statuses] == ["pending"] * count

    await wait_until(all_pending, what="the donations pending")
    return ids


async def receipts(surge: Surge) -> list[tuple[str, str, str | None, str]]:
    rows = await surge.pool.fetch("SELECT donation_id, kind, refund_id, recipient FROM surge.receipts ORDER BY id")
    return [(row["donation_id"], row["kind"], row["refund_id"], row["recipient"]) for row in rows]


async def test_settling_a_batch_writes_one_receipt_per_succeeded_donation(surge: Surge) -> None:
    first, second, declined = await pending_donations(surge, 3)
    batch = [
        Settlement(first, "succeeded", "simulated", card_brand="visa", card_last4="3063"),
        Settlement(second, "succeeded", "simulated"),
        Settlement(declined, "declined", "simulated", decline_code="generic_decline"),
    ]
    async with surge.pool.acquire() as connection:
        async with connection.transaction():
            assert await commit_settlements(connection, surge.app[ACCOUNTS], batch) == [True, True, True]
        async with connection.transaction():  # settled again (a lookup racing a webhook): nothing new
            assert await commit_settlements(connection, surge.app[ACCOUNTS], batch) == [False, False, False]
    expected = sorted([(first, "donation", None, "jane@example.org"), (second, "donation", None, "jane@example.org")])
    assert await receipts(surge) == expected
    card = await surge.pool.fetchrow("SELECT card_brand, card_last4 FROM surge.donations WHERE id = $1", first)
    assert (card["card_brand"], card["card_last4"]) == ("visa", "3063")


async def test_a_settlement_rolled_back_leaves_no_receipt(surge: Surge) -> None:
    [donation_id] = await pending_donations(surge, 1)

    class Abandoned(Exception):
        pass

    async with surge.pool.acquire() as connection:
        with pytest.raises(Abandoned):
            async with connection.transaction():
                settled = await commit_settlements(
                    connection, surge.app[ACCOUNTS], [Settlement(donation_id, "succeeded", "simulated")]
                )
                assert settled == [True]
                assert await connection.fetchval("SELECT count(*) FROM surge.receipts") == 1  # inside, it is there
                raise Abandoned
    assert await receipts(surge) == []
    assert await surge.pool.fetchval("SELECT status FROM surge.donations WHERE id = $1", donation_id) == "pending"


async def test_a_refund_made_outside_surge_gets_one_receipt(surge: Surge) -> None:
    gift = await succeeded_gift(surge, 5_000)
    event = refund_event(gift, "outside", "re_dashboard_1", 1_500)
    async with surge.pool.acquire() as connection:
        assert await process_event(connection, surge.app[ACCOUNTS], "simulated", event)
        assert not await process_event(connection, surge.app[ACCOUNTS], "simulated", event)  # redelivered
    refund_id = await surge.pool.fetchval("SELECT id FROM surge.refunds WHERE donation_id = $1", gift["id"])
    assert await receipts(surge) == sorted(
        [(gift["id"], "donation", None, "jane@example.org"), (gift["id"], "refund", refund_id, "jane@example.org")]
    )


async def test_relays_claiming_at_once_never_take_the_same_receipt(surge: Surge) -> None:
    for number in range(12):
        status, _ = await surge.donate(donation(1_000 + number))
        assert status in (201, 202)
    await wait_until(
        lambda: surge.pool.fetchval("SELECT count(*) = 12 FROM surge.receipts"), what="twelve receipts written"
    )
    claims = await asyncio.gather(*(outbox.claim_due(surge.pool, 5, 60.0, "example.org") for _ in range(4)))
    claimed = [receipt.id for claim in claims for receipt in claim]
    assert len(claimed) == len(set(claimed)) == 12
    again = await outbox.claim_due(surge.pool, 20, 60.0, "example.org")
    assert again == []  # all leased
    assert {receipt.message_id for claim in claims for receipt in claim} == {f"<{i}@example.org>" for i in claimed}
