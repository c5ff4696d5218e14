"""A processor call cancelled mid-flight (shutdown, a cancelled request) gives its gate slot back.

The simulated processor runs for real on PostgreSQL: ``pm_sim_timeout_charged`` records the charge, then hangs, so
the test knows the call is inside the processor when it cancels the task.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from adapters.simulated import SimulatedConfig, SimulatedProcessor
from engine.metrics import Metrics
from engine.pipeline.charger import Charger
from engine.pipeline.donations import Donation, new_donation_id
from engine.pipeline.gate import GateLimits, ProcessorGate
from engine.pipeline.limits import PipelineLimits
from engine.pipeline.settlement import Settlement
from ledger.batcher import BatcherLimits, GroupCommitter
from tests.waiting import wait_until


def a_donation(payment_method: str) -> Donation:
    now = datetime.now(UTC)
    return Donation(
        id=new_donation_id(),
        api_key_id="key_test",
        idempotency_key="idem",
        request_fingerprint=b"",
        campaign="demo",
        election="general-2026",
        donor_key="doe|jane|62701",
        amount_minor=2500,
        currency="USD",
        payment_method=payment_method,
        donor={},
        metadata={},
        status="charging",
        processor="simulated",
        processor_reference=None,
        decline_code=None,
        failure_message=None,
        fee_minor=None,
        refunded_minor=0,
        disputed_minor=0,
        attempts=0,
        created_at=now,
        updated_at=now,
        settled_at=None,
        refcode=None,
    )


async def _never_settles(connection: asyncpg.Connection, items: object) -> list[bool]:
    raise AssertionError("charge() does not settle")


@pytest.fixture
async def hanging_processor(pool: asyncpg.Pool) -> AsyncIterator[SimulatedProcessor]:
    async with SimulatedProcessor(pool, SimulatedConfig(hang_s=3600.0)) as processor:
        yield processor


async def test_a_cancelled_charge_releases_its_gate_slot(
    pool: asyncpg.Pool, hanging_processor: SimulatedProcessor
) -> None:
    gate = ProcessorGate(GateLimits(rate_per_s=1000, burst=100, concurrency_max=1))
    settle: GroupCommitter[Settlement, bool] = GroupCommitter(pool, _never_settles, BatcherLimits(), name="settle")
    charger = Charger(pool, [(hanging_processor, gate)], settle, PipelineLimits(charge_timeout_ms=3_600_000), Metrics())
    donation = a_donation("pm_sim_timeout_charged")
    assert gate.try_acquire()
    task = asyncio.create_task(charger.charge(hanging_processor, gate, donation))
    await wait_until(
        lambda: _recorded(hanging_processor, donation.id), what="the charge to reach the processor and hang"
    )
    assert gate.in_flight == 1 and not gate.try_acquire()  # the only slot is taken by the hanging call
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gate.in_flight == 0
    assert gate.try_acquire(), "the cancelled call's slot was not given back"


async def _recorded(processor: SimulatedProcessor, donation_id: str) -> bool:
    return any(charge.donation_id == donation_id for charge in await processor.charges())
