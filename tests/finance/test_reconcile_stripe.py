"""Reconciliation through the Stripe adapter: the engine charges and refunds at localstripe, then reconciles the
ledger against Stripe's balance transactions (Stripe's payouts are matched one by one, never as a balance sweep)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.keys import Role
from tests.e2e.conftest import Surge, donation
from tests.stripe.conftest import localstripe_url, surge_on_stripe  # noqa: F401  (fixtures)


async def test_charges_and_refunds_at_stripe_reconcile_cleanly(surge_on_stripe: Surge) -> None:  # noqa: F811
    surge = surge_on_stripe
    start = datetime.now(UTC) - timedelta(minutes=5)
    status, gift = await surge.donate(donation(5_000))
    assert status == 201, gift
    response = await surge.client.post(
        f"/v1/donations/{gift['id']}/refunds",
        json={"amount": 1_500},
        headers={**surge.auth(Role.FINANCE), "Idempotency-Key": "stripe-reconcile-refund"},
    )
    assert response.status == 200, await response.text()

    response = await surge.client.post(
        "/v1/reconciliations",
        json={
            "processor": "stripe",
            "from": start.isoformat(),
            "to": (datetime.now(UTC) + timedelta(minutes=5)).isoformat(),
            "slack_s": 60,
        },
        headers=surge.auth(Role.FINANCE),
    )
    assert response.status == 201, await response.text()
    run = await response.json()
    assert run["exceptions"] == [], run["exceptions"]
    assert run["matched"] == 2  # the charge and the refund, paired by the donation in Stripe's metadata
    usd = run["summary"]["USD"]
    assert (usd["processor_charges"], usd["processor_refunds"]) == (5_000, -1_500)
    assert usd["processor_net_movement"] == usd["ledger_clearing_movement"]
