"""A donation whose processor never decides is surfaced for finance's review, and still settles when it answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.simulated import SimulatedProcessor
from engine.api.state import PROCESSORS
from engine.finance.attention import Attention, attention
from engine.keys import Role
from engine.pipeline.review import ReviewLimits
from ledger import reads
from ledger.check import check_ledger
from tests.e2e.conftest import Surge, donation, start_surge, surge_settings
from tests.e2e.test_pipeline_paths import wait_for_status
from tests.waiting import wait_until


@pytest.fixture
async def impatient_surge(database_url: str, tmp_path: Path) -> AsyncIterator[Surge]:
    # Flagged after the first lookup that still finds the charge undecided.
    settings = surge_settings(database_url, tmp_path, review_after_lookups=1)
    server, client, pool, keys = await start_surge(database_url, settings)
    try:
        yield Surge(client, pool, keys, server.app)
    finally:
        await client.close()
        await pool.close()


async def needing_review(surge: Surge) -> list[dict[str, Any]]:
    response = await surge.client.get("/v1/donations?needs_review=true", headers=surge.auth(Role.FINANCE))
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body["data"]


async def gauge(surge: Surge) -> float:
    text = await (await surge.client.get("/metrics")).text()
    line = next(line for line in text.splitlines() if line.startswith("surge_donations_needing_review "))
    return float(line.split()[1])


async def test_an_undecided_donation_is_flagged_for_review_and_still_settles_later(impatient_surge: Surge) -> None:
    surge = impatient_surge
    status, _ = await surge.donate(donation(1000, first_name="Ann"))
    assert status == 201
    status, body = await surge.donate(donation(4200, "pm_card_authenticationRequired"))
    assert status == 202 and body["status"] == "processing"

    flagged = await wait_until(lambda: needing_review(surge), what="the undecided donation to be flagged")
    assert [d["id"] for d in flagged] == [body["id"]]  # not the settled one
    assert await wait_until(lambda: gauge(surge), what="the needing-review gauge to count it") == 1.0
    async with surge.pool.acquire() as connection:
        assert await attention(connection) == Attention(1, 0, 0)  # the finance dashboard's count
    text = await (await surge.client.get("/metrics")).text()
    assert "surge_donations_flagged_for_review_total 1.0" in text
    # Still pending, still holding the donor's limit: the processor may yet answer.
    assert (await surge.donate(donation(350_000 - 4200 + 1)))[0] == 422

    processor = surge.app[PROCESSORS][0][0]
    assert isinstance(processor, SimulatedProcessor)
    await processor.resolve_pending(flagged[0]["processor_reference"], succeeded=True)
    final = await wait_for_status(surge, body["id"], "succeeded")
    assert final["amount"] == 4200
    assert await needing_review(surge) == []
    async with surge.pool.acquire() as connection:
        assert (await reads.balance(connection, "contributions:demo")).posted == -(4200 + 1000)
        assert (await check_ledger(connection)).ok

    async def gauge_is_zero() -> bool:
        return await gauge(surge) == 0.0

    await wait_until(gauge_is_zero, what="the needing-review gauge to drop to zero")


def test_the_review_bound_is_lookups_or_hours_whichever_comes_first() -> None:
    limits = ReviewLimits(lookups_max=20, age_max_hours=24.0)
    now = datetime(2026, 11, 3, 12, tzinfo=UTC)
    assert not limits.is_stuck(19, now - timedelta(hours=23, minutes=59), now)
    assert limits.is_stuck(20, now, now)
    assert limits.is_stuck(1, now - timedelta(hours=24), now)
