"""Processor events in any order, over HTTP: what cannot apply yet is parked and applied once when it can — by the
event that unblocks it, or by the sweeper when the pipeline does — and a redelivery changes nothing."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.simulated import SimulatedProcessor
from adapters.simulated.webhooks import DISPUTE_CLOSED, DISPUTE_CREATED, REFUND_CREATED, event_payload
from engine.api.state import ACCOUNTS, PIPELINE, POOL, PROCESSORS
from engine.finance.attention import Attention, attention
from engine.keys import Role
from engine.metrics import Metrics
from engine.payments.event_sweeper import SweeperLimits, sweep_once
from engine.pipeline.settlement import Settlement, commit_settlements
from ledger import reads
from ledger.check import check_ledger
from tests.e2e.conftest import Surge, donation, running_surge, surge_settings
from tests.waiting import wait_until

PENDING_CARD = "pm_card_authenticationRequired"  # the charge waits for the donor: the donation stays pending


def simulator(surge: Surge) -> SimulatedProcessor:
    processor = surge.app[PROCESSORS][0][0]
    assert isinstance(processor, SimulatedProcessor)
    return processor


async def post_webhook(surge: Surge, payload: bytes, headers: dict[str, str]) -> dict[str, Any]:
    response = await surge.client.post("/v1/webhooks/simulated", data=payload, headers=headers)
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def post_event(surge: Surge, event_id: str, event_type: str, data_object: dict[str, Any]) -> dict[str, Any]:
    """An event the simulator would sign but cannot be made to send in this order (a refund of a pending charge)."""
    payload = event_payload(event_id, event_type, datetime.now(UTC), data_object)
    return await post_webhook(surge, payload, simulator(surge).signed_headers(payload))


async def balance(surge: Surge, account: str) -> int:
    async with surge.pool.acquire() as connection:
        return (await reads.balance(connection, account)).posted


async def read_donation(surge: Surge, donation_id: str) -> dict[str, Any]:
    response = await surge.client.get(f"/v1/donations/{donation_id}", headers=surge.auth(Role.FINANCE))
    body: dict[str, Any] = await response.json()
    return body


async def waiting(surge: Surge) -> list[tuple[str, str]]:
    rows = await surge.pool.fetch(
        "SELECT event_id, waiting_for FROM surge.parked_events WHERE resolved_at IS NULL ORDER BY event_id"
    )
    return [(row["event_id"], row["waiting_for"]) for row in rows]


async def outcome(surge: Surge, event_id: str) -> str | None:
    value: str | None = await surge.pool.fetchval(
        "SELECT outcome FROM surge.processor_events WHERE event_id = $1", event_id
    )
    return value


async def ledger_is_clean(surge: Surge) -> None:
    async with surge.pool.acquire() as connection:
        assert (await check_ledger(connection)).ok


async def pending_gift(surge: Surge, amount_minor: int) -> dict[str, Any]:
    status, gift = await surge.donate(donation(amount_minor, PENDING_CARD))
    assert status in (201, 202), gift
    row = await surge.pool.fetchrow("SELECT status, processor_reference FROM surge.donations WHERE id = $1", gift["id"])
    assert row["status"] == "pending" and row["processor_reference"], dict(row)
    return {**gift, "processor_reference": row["processor_reference"]}


def refund_object(gift: dict[str, Any], refund_id: str, amount_minor: int) -> dict[str, Any]:
    return {
        "id": refund_id,
        "object": "refund",
        "payment_intent": gift["processor_reference"],
        "amount": amount_minor,
        "currency": "usd",
        "status": "succeeded",  # as the simulator records a refund it made
        "metadata": {"donation_id": gift["id"]},
    }


async def test_a_refund_before_the_charge_succeeded_is_booked_once_it_has(surge: Surge) -> None:
    gift = await pending_gift(surge, 8_000)
    refund = refund_object(gift, "re_early", 3_000)

    first = await post_event(surge, "evt_refund_early", REFUND_CREATED, refund)
    again = await post_event(surge, "evt_refund_early", REFUND_CREATED, refund)

    # Recorded and parked, not lost; the redelivery of a parked event changes nothing.
    assert (first["duplicate"], again["duplicate"]) == (False, True)
    assert await waiting(surge) == [("evt_refund_early", "donation_not_final")]
    assert await outcome(surge, "evt_refund_early") == "parked"
    assert (await read_donation(surge, gift["id"]))["amount_refunded"] == 0
    assert await balance(surge, "refunds:demo") == 0

    succeeded = await simulator(surge).resolve_pending(gift["processor_reference"], succeeded=True)
    await post_webhook(surge, succeeded.payload, succeeded.headers)

    # Whichever settled the charge (this webhook, or the pipeline's lookup and then the sweeper), the refund is
    # booked once.
    read = await wait_until(
        lambda: _refunded(surge, gift["id"], 3_000), what="the parked refund to be booked after the charge succeeded"
    )
    assert read["status"] == "succeeded"
    assert await waiting(surge) == []
    assert await outcome(surge, "evt_refund_early") == "applied"
    await post_event(surge, "evt_refund_early", REFUND_CREATED, refund)
    assert (await read_donation(surge, gift["id"]))["amount_refunded"] == 3_000
    assert await balance(surge, "refunds:demo") == 3_000
    await ledger_is_clean(surge)


async def _refunded(surge: Surge, donation_id: str, amount_minor: int) -> dict[str, Any] | None:
    read = await read_donation(surge, donation_id)
    return read if read["amount_refunded"] == amount_minor else None


async def test_a_refund_of_a_charge_that_failed_is_never_applicable(surge: Surge) -> None:
    gift = await pending_gift(surge, 4_000)
    await post_event(surge, "evt_refund_failed_charge", REFUND_CREATED, refund_object(gift, "re_x", 4_000))
    failed = await simulator(surge).resolve_pending(gift["processor_reference"], succeeded=False)
    await post_webhook(surge, failed.payload, failed.headers)

    async def resolved() -> bool:
        return await waiting(surge) == []

    await wait_until(resolved, what="the parked refund to be resolved")
    assert await outcome(surge, "evt_refund_failed_charge") == "not_applicable"
    assert await balance(surge, "refunds:demo") == 0


@pytest.mark.parametrize("won", [True, False])
async def test_a_dispute_closed_before_it_was_opened_is_applied_after_the_opening(surge: Surge, won: bool) -> None:
    processor = simulator(surge)
    _, gift = await surge.donate(donation(10_000))
    opened = await processor.create_dispute(gift["processor_reference"])
    closed = await processor.close_dispute(opened.object_id, won=won)
    aggregate_before = await surge.pool.fetchval("SELECT posted_minor FROM surge.contribution_aggregates")

    await post_webhook(surge, closed.payload, closed.headers)
    assert await waiting(surge) == [(closed.event_id, "dispute_not_opened")]
    assert await balance(surge, "disputes:demo") == 0

    await post_webhook(surge, opened.payload, opened.headers)
    # The opening unblocks the closing in the same transaction.
    assert await waiting(surge) == []
    assert (await outcome(surge, opened.event_id), await outcome(surge, closed.event_id)) == ("applied", "applied")
    aggregate = await surge.pool.fetchval("SELECT posted_minor FROM surge.contribution_aggregates")
    read = await read_donation(surge, gift["id"])
    if won:
        assert await balance(surge, "disputes:demo") == 0
        assert (read["amount_disputed"], aggregate) == (0, aggregate_before)
    else:
        assert await balance(surge, "disputes:demo") == 10_000
        assert (read["amount_disputed"], aggregate) == (10_000, aggregate_before - 10_000)
    for webhook in (closed, opened, closed):
        assert (await post_webhook(surge, webhook.payload, webhook.headers))["duplicate"] is True
    # The same closing under other event ids (a processor's second notice), and a contradicting one: the dispute
    # closed once.
    closing = {"id": opened.object_id, "object": "dispute", "payment_intent": gift["processor_reference"]}
    await post_event(surge, "evt_closed_again", DISPUTE_CLOSED, {**closing, "status": "won" if won else "lost"})
    await post_event(surge, "evt_closed_contrary", DISPUTE_CLOSED, {**closing, "status": "lost" if won else "won"})
    assert (await outcome(surge, "evt_closed_again"), await outcome(surge, "evt_closed_contrary")) == (
        "duplicate",
        "not_applicable",
    )
    assert await balance(surge, "disputes:demo") == (0 if won else 10_000)
    assert await surge.pool.fetchval("SELECT posted_minor FROM surge.contribution_aggregates") == aggregate
    await ledger_is_clean(surge)


@pytest.fixture
async def timeout_surge(database_url: str, tmp_path: Path) -> AsyncIterator[Surge]:
    # A short charge timeout: a charge that hangs leaves its donation pending without the processor's reference.
    settings = surge_settings(database_url, tmp_path, processor_rate_per_s=1_000_000.0, charge_timeout_ms=300)
    async with running_surge(database_url, settings) as running:
        yield running


async def test_an_event_before_surge_knows_its_charge_is_applied_by_the_sweeper(timeout_surge: Surge) -> None:
    surge = timeout_surge
    status, gift = await surge.donate(donation(6_000, "pm_sim_timeout_charged"))
    assert status == 202, gift
    # Nobody but this test settles the charge from here on, so the order below is the order things happen in.
    await surge.app[PIPELINE].stop()
    row = await surge.pool.fetchrow("SELECT status, processor_reference FROM surge.donations WHERE id = $1", gift["id"])
    assert (row["status"], row["processor_reference"]) == ("pending", None)
    [charge] = [c for c in await simulator(surge).charges() if c.donation_id == gift["id"]]

    # A dispute names the charge, not the donation (a Stripe dispute does not carry the charge's metadata).
    dispute = {"id": "dp_early", "object": "dispute", "payment_intent": charge.reference, "status": "needs_response"}
    await post_event(surge, "evt_dispute_early", DISPUTE_CREATED, {**dispute, "amount": 6_000, "currency": "usd"})
    assert await waiting(surge) == [("evt_dispute_early", "donation_unknown")]

    # What the lookup does when it finds the charge: settle it with the processor's reference.
    async with surge.pool.acquire() as connection, connection.transaction():
        settlement = Settlement(gift["id"], "succeeded", "simulated", processor_reference=charge.reference)
        assert await commit_settlements(connection, surge.app[ACCOUNTS], [settlement]) == [True]

    async def disputed() -> int:
        return await balance(surge, "disputes:demo")

    assert await wait_until(disputed, what="the sweeper to apply the parked dispute") == 6_000
    assert await waiting(surge) == []
    assert await outcome(surge, "evt_dispute_early") == "applied"
    await ledger_is_clean(surge)


async def test_an_event_parked_too_long_is_reported_and_counted(surge: Surge, caplog: pytest.LogCaptureFixture) -> None:
    stray = {"id": "re_stray", "object": "refund", "amount": 500, "currency": "usd", "metadata": {"donation_id": "x"}}
    await post_event(surge, "evt_stray", REFUND_CREATED, {**stray, "payment_intent": "pi_elsewhere"})
    assert await waiting(surge) == [("evt_stray", "donation_unknown")]

    # The app's sweeper publishes the backlog on /metrics.
    async def exposed() -> str | None:
        text = await (await surge.client.get("/metrics")).text()
        return text if 'surge_parked_events{waiting_for="donation_unknown"} 1.0' in text else None

    await wait_until(exposed, what="the parked event on /metrics")

    limits = SweeperLimits(age_max_s=0.001)
    metrics = Metrics()  # not the app's: its own sweeper, with the default bound, publishes there meanwhile
    with caplog.at_level(logging.ERROR, logger="engine.payments.event_sweeper"):
        first = await sweep_once(surge.app[POOL], surge.app[ACCOUNTS], metrics, limits)
        second = await sweep_once(surge.app[POOL], surge.app[ACCOUNTS], metrics, limits)
    assert (first.waiting, first.overdue, second.overdue) == (1, 1, 1)
    reports = [r.getMessage() for r in caplog.records if r.name == "engine.payments.event_sweeper"]
    assert len(reports) == 1 and "evt_stray" in reports[0], reports  # reported once, counted while it lasts
    assert metrics.parked_events_overdue._value.get() == 1
    # Finance sees it on the dashboard's attention count, overdue.
    async with surge.app[POOL].acquire() as connection:
        assert await attention(connection) == Attention(0, 1, 1)


async def test_an_outside_refund_with_no_room_left_waits_for_room_then_is_booked_once(surge: Surge) -> None:
    # A dispute holds the whole charge when the processor reports a refund made in its dashboard: booking it would
    # refund more than was given, dropping it would lose it. It waits, parked, until the dispute is won.
    processor = simulator(surge)
    _, gift = await surge.donate(donation(10_000))
    opened = await processor.create_dispute(gift["processor_reference"])
    await post_webhook(surge, opened.payload, opened.headers)
    refund = refund_object(gift, "re_dashboard", 3_000)

    await post_event(surge, "evt_refund_no_room", REFUND_CREATED, refund)
    assert await waiting(surge) == [("evt_refund_no_room", "refund_room")]
    assert (await read_donation(surge, gift["id"]))["amount_refunded"] == 0

    won = await processor.close_dispute(opened.object_id, won=True)
    await post_webhook(surge, won.payload, won.headers)
    # The dispute's end gives the room back and applies the waiting refund in the same transaction.
    assert await waiting(surge) == []
    assert await outcome(surge, "evt_refund_no_room") == "applied"
    await post_event(surge, "evt_refund_no_room_again", REFUND_CREATED, refund)
    assert (await read_donation(surge, gift["id"]))["amount_refunded"] == 3_000
    assert await balance(surge, "refunds:demo") == 3_000
    await ledger_is_clean(surge)
