"""Refunds with the donation's discipline: recorded before the processor is called, always brought to a final state,
booked exactly once — across a processor outage, a SIGKILL between the processor call and the booking, and refund
webhooks delivered on top (issue 10, defect 2)."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
from typing import Any

import aiohttp
import asyncpg
import pytest

from adapters.simulated import SimulatedProcessor
from adapters.simulated.config import OutageWindow, SimulatedConfig
from adapters.simulated.webhooks import signed_headers
from engine.api.state import PROCESSORS
from engine.keys import Role
from engine.payments.refunds import reserve_refund
from ledger import reads
from ledger.check import check_ledger
from tests.e2e.conftest import Surge, donation
from tests.e2e.test_processes import engine_process, free_port, prepare
from tests.waiting import wait_until


async def balance(connection: asyncpg.Connection, account: str) -> int:
    return (await reads.balance(connection, account)).posted


async def refund_state(connection: asyncpg.Connection, refund_id: str) -> asyncpg.Record:
    return await connection.fetchrow(
        """SELECT r.status, r.processor_reference, d.refunded_minor, d.refund_reserved_minor
             FROM surge.refunds r JOIN surge.donations d ON d.id = r.donation_id WHERE r.id = $1""",
        refund_id,
    )


async def test_a_refund_refused_during_an_outage_is_answered_202_and_finished_by_the_worker(surge: Surge) -> None:
    processor = surge.app[PROCESSORS][0][0]
    assert isinstance(processor, SimulatedProcessor)
    _, gift = await surge.donate(donation(6_000))
    # The simulator's own outage window (it answers "unavailable", nothing recorded) covers the refund call.
    healthy = processor.config
    processor.config = dataclasses.replace(healthy, outages=(OutageWindow(0, time.time() + 3600),))
    url = f"/v1/donations/{gift['id']}/refunds"
    headers = {**surge.auth(Role.FINANCE), "Idempotency-Key": "outage-refund"}
    response = await surge.client.post(url, json={"amount": 2_000}, headers=headers)
    refund = await response.json()
    assert response.status == 202 and refund["status"] == "pending", refund  # never a 503 after reserving
    async with surge.pool.acquire() as connection:
        held = await refund_state(connection, refund["id"])
        assert (held["status"], held["refund_reserved_minor"]) == ("refunding", 2_000)

        processor.config = healthy  # the outage ends: the worker sends the refund again, with the same key

        async def booked() -> bool:
            return (await refund_state(connection, refund["id"]))["status"] == "succeeded"

        await wait_until(booked, timeout=30, what="the refund worker to finish the refund")
        final = await refund_state(connection, refund["id"])
        assert (final["refunded_minor"], final["refund_reserved_minor"]) == (2_000, 0)
        assert await balance(connection, "refunds:demo") == 2_000
        assert [r.refund_id for r in await processor.refunds()] == [refund["id"]]
        assert (await check_ledger(connection)).ok
    replay = await surge.client.post(url, json={"amount": 2_000}, headers=headers)
    assert replay.status == 200 and (await replay.json())["id"] == refund["id"]


async def test_a_refund_the_processor_never_recorded_is_sent_again_by_the_worker(surge: Surge) -> None:
    """Left 'refunding' with nothing at the processor (the engine died before its call left): lookup finds
    nothing, so the worker sends it — once."""
    processor = surge.app[PROCESSORS][0][0]
    assert isinstance(processor, SimulatedProcessor)
    _, gift = await surge.donate(donation(4_000))
    async with surge.pool.acquire() as connection:
        api_key = await connection.fetchval("SELECT id FROM surge.api_keys WHERE role = 'finance' LIMIT 1")
        claim = await reserve_refund(connection, api_key, "never-sent", gift["id"], 1_500, lease_s=0.0)

        async def booked() -> bool:
            return (await refund_state(connection, claim.refund.id))["status"] == "succeeded"

        await wait_until(booked, timeout=30, what="the refund worker to send and book the refund")
        assert await balance(connection, "refunds:demo") == 1_500
        assert [(r.refund_id, r.amount.amount_minor) for r in await processor.refunds()] == [(claim.refund.id, 1_500)]


async def post_refund(
    session: aiohttp.ClientSession, port: int, key: str, donation_id: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any]] | None:
    try:
        async with session.post(
            f"http://127.0.0.1:{port}/v1/donations/{donation_id}/refunds",
            json=body,
            headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "crash-refund"},
        ) as response:
            return response.status, await response.json()
    except (TimeoutError, aiohttp.ClientError):
        return None


@pytest.mark.slow
async def test_sigkill_between_the_processor_call_and_the_booking_books_the_refund_once(database_url: str) -> None:
    keys = await prepare(database_url)
    port = free_port()
    # A short processor timeout keeps the refund's lease (timeout + margin) short, so the restart recovers it soon.
    environment = {"SURGE_CHARGE_TIMEOUT_MS": "1000", "SURGE_PROCESSOR_RATE_PER_S": "1000"}
    connection = await asyncpg.connect(database_url)
    blocker = await asyncpg.connect(database_url)
    try:
        async with (
            engine_process(database_url, port, environment=environment) as engine,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
        ):
            async with session.post(
                f"http://127.0.0.1:{port}/v1/donations",
                json=donation(9_000),
                headers={"Authorization": f"Bearer {keys[Role.FORM]}", "Idempotency-Key": "crash-gift"},
            ) as response:
                assert response.status == 201
                gift = await response.json()
            # The booking takes the donor's aggregate row (the refund no longer counts toward the limit); the
            # reservation does not. Holding that row lets the processor call finish and stops the booking.
            transaction = blocker.transaction()
            await transaction.start()
            await blocker.execute("SELECT 1 FROM surge.contribution_aggregates FOR UPDATE")
            request = post_refund(session, port, keys[Role.FINANCE], gift["id"], {"amount": 3_500})
            answer = asyncio.create_task(request)

            async def refunded_at_processor_and_booking_blocked() -> bool:
                recorded = await connection.fetchval("SELECT count(*) FROM simulator.refunds")
                waiting = await connection.fetchval(
                    """SELECT count(*) FROM pg_stat_activity
                        WHERE datname = current_database() AND wait_event_type = 'Lock'"""
                )
                return bool(recorded == 1 and waiting >= 1)

            await wait_until(
                refunded_at_processor_and_booking_blocked,
                timeout=30,
                what="the processor to record the refund and the engine's booking to wait",
            )
            engine.send_signal(signal.SIGKILL)
            assert await answer is None  # the client never heard back
            await transaction.rollback()
        state = await connection.fetchrow(
            "SELECT r.status, refunded_minor, refund_reserved_minor FROM surge.refunds r"
            " JOIN surge.donations d ON d.id = r.donation_id"
        )
        assert (state["status"], state["refunded_minor"], state["refund_reserved_minor"]) == ("refunding", 0, 3_500)
        assert await balance(connection, "refunds:demo") == 0

        async with engine_process(database_url, port, environment=environment):

            async def booked() -> bool:
                return await connection.fetchval("SELECT status FROM surge.refunds") == "succeeded"

            await wait_until(booked, timeout=60, what="the restarted engine's refund worker to book the refund")
            # The simulator's refund webhook, delivered now (and twice), changes nothing more.
            event = await connection.fetchrow("SELECT payload FROM simulator.events WHERE type = 'refund.created'")
            payload = event["payload"].encode()
            headers = signed_headers(payload, SimulatedConfig().webhook_secret, int(time.time()))
            async with aiohttp.ClientSession() as session:
                for _ in range(2):
                    async with session.post(
                        f"http://127.0.0.1:{port}/v1/webhooks/simulated", data=payload, headers=headers
                    ) as response:
                        assert response.status == 200
                replayed = await post_refund(session, port, keys[Role.FINANCE], gift["id"], {"amount": 3_500})
            assert replayed is not None and replayed[0] == 200 and replayed[1]["status"] == "succeeded", replayed

        rows = await connection.fetch("SELECT id, processor_reference, status FROM surge.refunds")
        assert len(rows) == 1 and rows[0]["processor_reference"].startswith("re_sim_")
        assert await connection.fetchval("SELECT count(*) FROM simulator.refunds") == 1
        entries = await connection.fetchval("SELECT count(*) FROM ledger.entries WHERE reference = $1", rows[0]["id"])
        assert entries == 1
        assert await balance(connection, "refunds:demo") == 3_500
        donation_row = await connection.fetchrow("SELECT refunded_minor, refund_reserved_minor FROM surge.donations")
        assert (donation_row["refunded_minor"], donation_row["refund_reserved_minor"]) == (3_500, 0)
        assert await connection.fetchval("SELECT posted_minor FROM surge.contribution_aggregates") == 5_500
        assert (await check_ledger(connection)).ok
    finally:
        await blocker.close()
        await connection.close()


async def test_the_database_refuses_a_processor_refund_booked_twice_or_booked_without_its_id(surge: Surge) -> None:
    _, gift = await surge.donate(donation(4_000))
    insert = """INSERT INTO surge.refunds (id, donation_id, amount_minor, currency, status, processor_reference, origin)
                VALUES ($1, $2, 1000, 'USD', 'succeeded', $3, $4)"""
    async with surge.pool.acquire() as connection:
        await connection.execute(insert, "re_one", gift["id"], "re_sim_same", "processor_refund")
        with pytest.raises(asyncpg.UniqueViolationError):
            await connection.execute(insert, "re_two", gift["id"], "re_sim_same", "processor_refund")
        with pytest.raises(asyncpg.CheckViolationError):
            await connection.execute(insert, "re_three", gift["id"], None, "processor_refund")
        with pytest.raises(asyncpg.CheckViolationError):
            await connection.execute(insert, "re_four", gift["id"], None, "api")
        # Only a refund booked from a charge.refunded that named none may wait for its id (attached later).
        await connection.execute(insert, "re_five", gift["id"], None, "processor_charge")


async def test_concurrent_requests_with_one_key_make_one_refund(surge: Surge) -> None:
    _, gift = await surge.donate(donation(5_000))
    headers = {**surge.auth(Role.FINANCE), "Idempotency-Key": "same-key"}

    async def refund() -> tuple[int, dict[str, Any]]:
        response = await surge.client.post(
            f"/v1/donations/{gift['id']}/refunds", json={"amount": 1_000}, headers=headers
        )
        return response.status, await response.json()

    answers = await asyncio.gather(*(refund() for _ in range(6)))
    assert {status for status, _ in answers} <= {200, 202}, answers
    assert len({body["id"] for _, body in answers}) == 1
    async with surge.pool.acquire() as connection:

        async def booked() -> bool:
            return await connection.fetchval("SELECT status FROM surge.refunds") == "succeeded"

        await wait_until(booked, what="the one refund booked")
        assert await balance(connection, "refunds:demo") == 1_000
