"""A refund made outside Surge whose event comes after Stripe's charge.refunded (no refund named) booked part of it
unnamed: the refund's own event claims that part and books only the rest, so the books equal the processor's
refunded total — and later events about the refund book nothing (engine/payments/refund_events.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from adapters.base import EventType, Money, ProcessorEvent, RefundStatus
from engine.api.state import ACCOUNTS
from engine.keys import Role
from engine.payments.processor_events import process_event
from ledger import reads
from ledger.check import check_ledger
from tests.e2e.conftest import Surge, donation


async def deliver(surge: Surge, event: ProcessorEvent) -> bool:
    async with surge.pool.acquire() as connection:
        return await process_event(connection, surge.app[ACCOUNTS], "simulated", event)


async def books(surge: Surge, gift: dict[str, Any]) -> tuple[int, int, bool]:
    """The donation's refunded amount, the campaign's refunds balance, and whether the ledger checks clean."""
    refunded = await surge.pool.fetchval("SELECT refunded_minor FROM surge.donations WHERE id = $1", gift["id"])
    async with surge.pool.acquire() as connection:
        balance = (await reads.balance(connection, "refunds:demo")).posted
        clean = (await check_ledger(connection)).ok
    return refunded, balance, clean


def charge_refunded(gift: dict[str, Any], tag: str, amount: int, amount_refunded: int) -> ProcessorEvent:
    """Stripe's charge.refunded since API 2022-11-15: no refund embedded, the charge's cumulative refunded amount."""
    return ProcessorEvent(
        f"evt_{tag}",
        EventType.CHARGE_REFUNDED,
        datetime.now(UTC),
        processor_reference=gift["processor_reference"],
        donation_id=gift["id"],
        amount=Money(amount, "USD"),
        amount_refunded=Money(amount_refunded, "USD"),
    )


def refund_event(
    gift: dict[str, Any],
    tag: str,
    refund: str,
    amount: int,
    status: RefundStatus = RefundStatus.SUCCEEDED,
    surge_refund: str | None = None,
) -> ProcessorEvent:
    """refund.created / refund.updated / refund.failed of one refund: made in Stripe's dashboard unless it carries
    Surge's refund id."""
    return ProcessorEvent(
        f"evt_{tag}",
        EventType.REFUND_UPDATED,
        datetime.now(UTC),
        processor_reference=gift["processor_reference"],
        donation_id=gift["id"],
        amount=Money(amount, "USD"),
        object_id=refund,
        refund_status=status,
        refund_id=surge_refund,
    )


async def succeeded_gift(surge: Surge, amount: int) -> dict[str, Any]:
    status, gift = await surge.donate(donation(amount))
    assert status == 201, gift
    reference = await surge.pool.fetchval("SELECT processor_reference FROM surge.donations WHERE id = $1", gift["id"])
    return {**gift, "processor_reference": reference}


async def surge_refund(surge: Surge, gift: dict[str, Any], amount: int) -> None:
    response = await surge.client.post(
        f"/v1/donations/{gift['id']}/refunds",
        json={"amount": amount},
        headers={**surge.auth(Role.FINANCE), "Idempotency-Key": surge.next_key()},
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["status"] == "succeeded"


async def test_an_outside_refund_larger_than_its_unnamed_part_books_only_the_rest(surge: Surge) -> None:
    # Outside refund of 2_000 made in the dashboard (its event not delivered yet), then Surge's refund of 1_400:
    # Stripe's charge.refunded for the 1_400 says 3_400 refunded, of which 1_400 is unexplained and booked unnamed.
    gift = await succeeded_gift(surge, 5_000)
    await surge_refund(surge, gift, 1_400)
    assert await deliver(surge, charge_refunded(gift, "echo", 1_400, 3_400))
    assert await books(surge, gift) == (2_800, 2_800, True)

    # The outside refund's own event claims the unnamed 1_400 and books the other 600: Stripe's 3_400.
    assert await deliver(surge, refund_event(gift, "created", "re_dashboard", 2_000))
    assert await books(surge, gift) == (3_400, 3_400, True)

    # Later events about it change nothing.
    assert await deliver(surge, refund_event(gift, "updated", "re_dashboard", 2_000))
    assert await deliver(surge, refund_event(gift, "updated_again", "re_dashboard", 2_000))
    assert await books(surge, gift) == (3_400, 3_400, True)


async def test_an_outside_refund_smaller_than_the_unnamed_part_claims_some_of_it(surge: Surge) -> None:
    # Two outside refunds (800 and 1_200) not delivered; Surge refunds 2_000; the echo books 2_000 unnamed.
    gift = await succeeded_gift(surge, 5_000)
    await surge_refund(surge, gift, 2_000)
    assert await deliver(surge, charge_refunded(gift, "echo", 2_000, 4_000))
    assert await books(surge, gift) == (4_000, 4_000, True)

    # Each claims its part of the open 2_000 and books nothing; redelivered or updated, still nothing.
    assert await deliver(surge, refund_event(gift, "first", "re_small", 800))
    assert await deliver(surge, refund_event(gift, "second", "re_large", 1_200))
    assert await deliver(surge, refund_event(gift, "first_updated", "re_small", 800))
    assert await books(surge, gift) == (4_000, 4_000, True)
    attributed = await surge.pool.fetchval(
        "SELECT sum(attributed_minor) FROM surge.refunds WHERE donation_id = $1 AND origin = 'processor_charge'",
        gift["id"],
    )
    assert attributed == 2_000


async def test_an_outside_refund_equal_to_its_unnamed_row_is_attached_to_it(surge: Surge) -> None:
    # The outside 2_000 is charge.refunded's only refund: booked unnamed, then named by its event, booked once.
    gift = await succeeded_gift(surge, 5_000)
    assert await deliver(surge, charge_refunded(gift, "charge", 2_000, 2_000))
    assert await books(surge, gift) == (2_000, 2_000, True)

    assert await deliver(surge, refund_event(gift, "created", "re_equal", 2_000))
    assert await deliver(surge, refund_event(gift, "updated", "re_equal", 2_000))
    assert await books(surge, gift) == (2_000, 2_000, True)
    rows = await surge.pool.fetch(
        "SELECT amount_minor, attributed_minor, processor_reference FROM surge.refunds WHERE donation_id = $1",
        gift["id"],
    )
    assert [tuple(row) for row in rows] == [(2_000, 2_000, "re_equal")]
