"""The refund edges finance must see: a refund the processor never decides is flagged for review (and still settles
when it answers), and a refund the processor returns after it succeeded is reversed by a new entry (issue 10)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.base import RefundStatus
from adapters.simulated import SimulatedProcessor
from adapters.simulated.config import OutageWindow
from engine.api.state import ACCOUNTS, PROCESSORS
from engine.finance.attention import Attention, attention
from engine.keys import Role
from engine.payments.processor_events import process_event
from ledger import reads
from ledger.check import check_ledger
from tests.e2e.conftest import Surge, donation, running_surge, surge_settings
from tests.e2e.test_refund_attribution import refund_event, succeeded_gift
from tests.waiting import wait_until


@pytest.fixture
async def impatient_surge(database_url: str, tmp_path: Path) -> AsyncIterator[Surge]:
    # A refund is flagged after the first worker attempt that leaves it undecided.
    settings = surge_settings(database_url, tmp_path, review_after_lookups=1)
    async with running_surge(database_url, settings) as running:
        yield running


def simulator(surge: Surge) -> SimulatedProcessor:
    processor = surge.app[PROCESSORS][0][0]
    assert isinstance(processor, SimulatedProcessor)
    return processor


async def metric(surge: Surge, name: str) -> float:
    text = await (await surge.client.get("/metrics")).text()
    line = next(line for line in text.splitlines() if line.startswith(f"{name} "))
    return float(line.split()[1])


async def refund(surge: Surge, gift: dict[str, Any], amount: int, key: str) -> tuple[int, dict[str, Any]]:
    response = await surge.client.post(
        f"/v1/donations/{gift['id']}/refunds",
        json={"amount": amount},
        headers={**surge.auth(Role.FINANCE), "Idempotency-Key": key},
    )
    body: dict[str, Any] = await response.json()
    return response.status, body


async def test_a_refund_the_processor_never_decides_is_flagged_and_still_settles_later(impatient_surge: Surge) -> None:
    surge = impatient_surge
    processor = simulator(surge)
    _, gift = await surge.donate(donation(6_000))
    healthy = processor.config
    processor.config = dataclasses.replace(healthy, outages=(OutageWindow(0, time.time() + 3600),))
    status, made = await refund(surge, gift, 2_000, "undecided-refund")
    assert status == 202, made

    async def flagged() -> bool:
        async with surge.pool.acquire() as connection:
            return (await attention(connection)).refunds_needing_review == 1

    await wait_until(flagged, timeout=30, what="the undecided refund to be flagged for review")
    assert await wait_until(lambda: metric(surge, "surge_refunds_needing_review"), what="the gauge to count it") == 1.0
    assert await metric(surge, "surge_refunds_flagged_for_review_total") == 1.0

    processor.config = healthy  # the processor answers at last: the refund settles once, the flag no longer counts

    async def settled() -> bool:
        status = await surge.pool.fetchval("SELECT status FROM surge.refunds WHERE id = $1", made["id"])
        return status == "succeeded"

    await wait_until(settled, timeout=30, what="the flagged refund to settle")
    async with surge.pool.acquire() as connection:
        assert await attention(connection) == Attention(0, 0, 0)
        assert (await reads.balance(connection, "refunds:demo")).posted == 2_000
        assert (await check_ledger(connection)).ok


async def test_a_refund_returned_after_it_succeeded_is_reversed_once_by_a_new_entry(surge: Surge) -> None:
    gift = await succeeded_gift(surge, 5_000)
    aggregate = "SELECT posted_minor FROM surge.contribution_aggregates"
    status, made = await refund(surge, gift, 3_000, "returned-refund")
    assert (status, made["status"]) == (200, "succeeded"), made
    assert await surge.pool.fetchval(aggregate) == 2_000

    event = refund_event(gift, "failed", made["processor_reference"], 3_000, RefundStatus.FAILED, made["id"])
    async with surge.pool.acquire() as connection:
        assert await process_event(connection, surge.app[ACCOUNTS], "simulated", event)
        # The same failure under another event id (a second notice) reverses nothing more.
        again = dataclasses.replace(event, id="evt_failed_again")
        await process_event(connection, surge.app[ACCOUNTS], "simulated", again)

        row = await connection.fetchrow(
            """SELECT r.status, r.returned_at, d.refunded_minor FROM surge.refunds r
                 JOIN surge.donations d ON d.id = r.donation_id WHERE r.id = $1""",
            made["id"],
        )
        assert (row["status"], row["returned_at"] is not None, row["refunded_minor"]) == ("failed", True, 0)
        # Postings stay: the reversal is a new entry, and the refunds account is back to zero.
        entries = await connection.fetch(
            "SELECT reference FROM ledger.entries WHERE reference LIKE $1 ORDER BY reference", made["id"] + "%"
        )
        assert [e["reference"] for e in entries] == [made["id"], made["id"] + ":returned"]
        assert (await reads.balance(connection, "refunds:demo")).posted == 0
        assert await connection.fetchval(aggregate) == 5_000  # the contribution counts again
        assert (await attention(connection)).refunds_returned == 1
        assert (await check_ledger(connection)).ok

    # Refundable again (to the donor's new card, say): the donation shows nothing refunded.
    read = await surge.client.get(f"/v1/donations/{gift['id']}", headers=surge.auth(Role.FINANCE))
    assert (await read.json())["amount_refunded"] == 0
