"""The pipeline's other paths: the durable queue when the processor budget is spent, timeouts resolved by lookup,
and processor webhooks (disputes, payouts, external refunds) processed once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.base import RefundRequest
from adapters.simulated import SIGNATURE_HEADER, SimulatedProcessor
from engine.api.state import PROCESSORS
from engine.keys import Role
from ledger import reads
from ledger.check import check_ledger
from ledger.money import Money
from tests.e2e.conftest import Surge, donation, running_surge, surge_settings
from tests.waiting import wait_until


async def wait_for_status(surge: Surge, donation_id: str, wanted: str, timeout_s: float = 15.0) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        response = await surge.client.get(f"/v1/donations/{donation_id}", headers=surge.auth(Role.FINANCE))
        body: dict[str, Any] = await response.json()
        return body if body["status"] == wanted else None

    return await wait_until(reached, timeout=timeout_s, what=f"donation {donation_id} to be {wanted}")


async def balance(surge: Surge, account: str) -> int:
    async with surge.pool.acquire() as connection:
        return (await reads.balance(connection, account)).posted


@pytest.fixture
async def slow_processor_surge(database_url: str, tmp_path: Path) -> AsyncIterator[Surge]:
    # 5 charges/s with a burst of 1 and a short charge timeout: intake outruns the processor.
    settings = surge_settings(database_url, tmp_path, processor_rate_per_s=5.0, charge_timeout_ms=300)
    async with running_surge(database_url, settings) as running:
        yield running


async def test_intake_outruns_the_processor_through_the_durable_queue(slow_processor_surge: Surge) -> None:
    surge = slow_processor_surge
    results = await asyncio.gather(*(surge.donate(donation(100 + n, first_name=f"D{n}")) for n in range(12)))
    statuses = [status for status, _ in results]
    assert statuses.count(202) >= 10, statuses
    queued = [body for status, body in results if status == 202]
    assert all(body["status"] == "processing" for body in queued)
    for body in queued:
        final = await wait_for_status(surge, body["id"], "succeeded")
        assert final["status"] == "succeeded", final
    assert await balance(surge, "contributions:demo") == -sum(100 + n for n in range(12))
    async with surge.pool.acquire() as connection:
        assert (await check_ledger(connection)).ok


async def test_a_timed_out_charge_is_looked_up_not_repeated(slow_processor_surge: Surge) -> None:
    surge = slow_processor_surge
    status, body = await surge.donate(donation(4200, "pm_sim_timeout_charged"))
    assert status == 202 and body["status"] == "processing"
    final = await wait_for_status(surge, body["id"], "succeeded")
    assert final["status"] == "succeeded"
    processor = surge.app[PROCESSORS][0][0]
    assert isinstance(processor, SimulatedProcessor)
    charges = [c for c in await processor.charges() if c.donation_id == body["id"]]
    assert len(charges) == 1
    assert await balance(surge, "contributions:demo") == -4200


async def test_a_lost_charge_stays_processing_and_holds_the_limit(slow_processor_surge: Surge) -> None:
    surge = slow_processor_surge
    status, body = await surge.donate(donation(300_000, "pm_sim_timeout_lost"))
    assert status == 202
    # Its outcome is unknown, so the amount stays held against the donor's limit.
    assert (await surge.donate(donation(60_000)))[0] == 422
    processor = surge.app[PROCESSORS][0][0]
    assert isinstance(processor, SimulatedProcessor)
    assert not [c for c in await processor.charges() if c.donation_id == body["id"]]
    assert await balance(surge, "contributions:demo") == 0


async def post_webhook(surge: Surge, payload: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    response = await surge.client.post("/v1/webhooks/simulated", data=payload, headers=headers)
    return response.status, await response.json()


async def test_disputes_and_payouts_arrive_by_webhook_once(surge: Surge) -> None:
    processor = surge.app[PROCESSORS][0][0]
    assert isinstance(processor, SimulatedProcessor)
    _, gift = await surge.donate(donation(10_000))
    fee = gift["fee"]
    opened = await processor.create_dispute(gift["processor_reference"])
    assert await post_webhook(surge, opened.payload, opened.headers) == (
        200,
        {"received": True, "event": opened.event_id, "duplicate": False},
    )
    assert (await post_webhook(surge, opened.payload, opened.headers))[1]["duplicate"] is True
    assert await balance(surge, "disputes:demo") == 10_000
    assert await balance(surge, "fees:simulated:USD") == fee + 1500
    assert await balance(surge, "clearing:simulated:USD") == 10_000 - fee - 10_000 - 1500
    won = await processor.close_dispute(opened.object_id, won=True)
    assert (await post_webhook(surge, won.payload, won.headers))[0] == 200
    assert await balance(surge, "disputes:demo") == 0
    payout = await processor.pay_out()
    assert payout is not None
    assert (await post_webhook(surge, payout.payload, payout.headers))[0] == 200
    assert await balance(surge, "clearing:simulated:USD") == 0
    assert await balance(surge, "bank:simulated:USD") == 10_000 - fee - 1500
    async with surge.pool.acquire() as connection:
        assert (await check_ledger(connection)).ok


async def test_forged_and_stale_webhooks_change_nothing(surge: Surge) -> None:
    processor = surge.app[PROCESSORS][0][0]
    assert isinstance(processor, SimulatedProcessor)
    _, gift = await surge.donate(donation(5_000))
    opened = await processor.create_dispute(gift["processor_reference"])
    forged = dict(opened.headers)
    forged[SIGNATURE_HEADER] = forged[SIGNATURE_HEADER][:-4] + "beef"
    stale = processor.signed_headers(opened.payload, timestamp_s=int(time.time()) - 3600)
    for headers in (forged, stale, {}):
        status, body = await post_webhook(surge, opened.payload, headers)
        assert status == 400 and body["error"]["code"] == "signature_invalid"
    assert await surge.pool.fetchval("SELECT count(*) FROM surge.processor_events") == 0
    assert await balance(surge, "disputes:demo") == 0


async def test_a_refund_made_at_the_processor_is_booked_from_its_webhook(surge: Surge) -> None:
    processor = surge.app[PROCESSORS][0][0]
    assert isinstance(processor, SimulatedProcessor)
    _, gift = await surge.donate(donation(8_000))
    made_in_dashboard = RefundRequest("dashboard-refund-1", "re_dash", gift["processor_reference"], Money(3_000, "USD"))
    result = await processor.refund(made_in_dashboard)
    assert result.status.value == "succeeded"
    [event] = [w for w in await processor.webhooks() if "refund" in w.event_type]
    assert (await post_webhook(surge, event.payload, event.headers))[0] == 200
    assert await balance(surge, "refunds:demo") == 3_000
    read = await (await surge.client.get(f"/v1/donations/{gift['id']}", headers=surge.auth(Role.FINANCE))).json()
    assert read["amount_refunded"] == 3_000
