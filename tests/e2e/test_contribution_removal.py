"""One way to take a contribution back out of a donor's aggregate: refunds and lost disputes both go through
engine.pipeline.aggregates.remove_contribution, which stops at zero and warns (going below would be a bug elsewhere)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from adapters.simulated import SimulatedProcessor
from engine.api.state import PROCESSORS
from engine.keys import Role
from ledger.money import Money
from tests.e2e.conftest import Surge, donation

AGGREGATES_LOGGER = "engine.pipeline.aggregates"


async def posted_aggregate(surge: Surge) -> int:
    value: int = await surge.pool.fetchval("SELECT posted_minor FROM surge.contribution_aggregates")
    return value


async def lose_dispute(surge: Surge, gift: dict[str, Any], amount_minor: int) -> None:
    processor = surge.app[PROCESSORS][0][0]
    assert isinstance(processor, SimulatedProcessor)
    opened = await processor.create_dispute(gift["processor_reference"], Money(amount_minor, "USD"))
    lost = await processor.close_dispute(opened.object_id, won=False)
    for webhook in (opened, lost):
        response = await surge.client.post("/v1/webhooks/simulated", data=webhook.payload, headers=webhook.headers)
        assert response.status == 200, await response.text()


def below_zero_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == AGGREGATES_LOGGER and r.levelno == logging.WARNING]


async def test_a_refund_and_a_lost_dispute_both_stop_the_aggregate_at_zero(
    surge: Surge, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=AGGREGATES_LOGGER)
    _, gift = await surge.donate(donation(5_000))
    finance = surge.auth(Role.FINANCE)
    url = f"/v1/donations/{gift['id']}/refunds"
    first = await surge.client.post(url, json={"amount": 1_000}, headers={**finance, "Idempotency-Key": "r1"})
    assert first.status == 200, await first.text()
    assert await posted_aggregate(surge) == 4_000
    assert below_zero_warnings(caplog) == []

    # Something else (a bug) has already taken most of the aggregate: the refund still succeeds and stops at zero
    # (the aggregate's CHECK used to fail the refund's booking instead).
    await surge.pool.execute("UPDATE surge.contribution_aggregates SET posted_minor = 500")
    second = await surge.client.post(url, json={"amount": 2_000}, headers={**finance, "Idempotency-Key": "r2"})
    assert second.status == 200, await second.text()
    assert await posted_aggregate(surge) == 0
    [refund_warning] = below_zero_warnings(caplog)
    assert "500 posted, 2000 removed" in refund_warning

    # The lost dispute of the rest goes through the same function: it stops at zero and warns too.
    await lose_dispute(surge, gift, 2_000)
    assert await posted_aggregate(surge) == 0
    assert below_zero_warnings(caplog)[1:] == [
        refund_warning.replace("500 posted, 2000 removed", "0 posted, 2000 removed")
    ]
    read = await (await surge.client.get(f"/v1/donations/{gift['id']}", headers=finance)).json()
    assert (read["amount_refunded"], read["amount_disputed"]) == (3_000, 2_000)
