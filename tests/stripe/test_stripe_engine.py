"""The whole engine configured for Stripe, against localstripe: a donation is charged there, settles in the ledger
with its fee, is refunded through Stripe, and disputes and payouts arrive as signed webhooks at /v1/webhooks/stripe.

localstripe sends no dispute or payout events, so those payloads are built here in Stripe's shape and signed with
the real algorithm (HMAC-SHA256 over "timestamp.payload"); payment_intent events are delivered by localstripe itself.
"""

from __future__ import annotations

import time

import aiohttp

from engine.keys import Role
from ledger import reads
from ledger.check import check_ledger
from tests.e2e.conftest import Surge, donation
from tests.stripe.conftest import WEBHOOK_SECRET
from tests.stripe.test_stripe_webhooks import DISPUTE, PAYOUT, event, sign
from tests.waiting import wait_until


async def balance(surge: Surge, account: str) -> int:
    async with surge.pool.acquire() as connection:
        return (await reads.balance(connection, account)).posted


async def post_event(surge: Surge, body: bytes) -> int:
    response = await surge.client.post(
        "/v1/webhooks/stripe", data=body, headers={"Stripe-Signature": sign(body), "Content-Type": "application/json"}
    )
    return response.status


async def test_a_donation_is_charged_at_stripe_and_booked_with_its_fee(surge_on_stripe: Surge) -> None:
    surge = surge_on_stripe
    status, gift = await surge.donate(donation(5000))
    assert status == 201, gift
    assert gift["processor"] == "stripe" and gift["processor_reference"].startswith("pi_")
    # The fee is read from the charge's balance transaction; localstripe records every fee as 0 (a known value, not
    # "unknown", which would be None). Non-zero fees are booked in the simulated-processor tests.
    fee = gift["fee"]
    assert fee == 0
    assert await balance(surge, "contributions:demo") == -5000
    assert await balance(surge, "fees:stripe:USD") == fee
    assert await balance(surge, "clearing:stripe:USD") == 5000 - fee

    declined_status, declined = await surge.donate(donation(700, "pm_card_chargeCustomerFail", first_name="Card"))
    assert declined_status == 402 and declined["error"]["type"] == "card_error"
    assert await balance(surge, "contributions:demo") == -5000

    refund = await surge.client.post(
        f"/v1/donations/{gift['id']}/refunds",
        json={"amount": 1500},
        headers={**surge.auth(Role.FINANCE), "Idempotency-Key": "stripe-refund-1"},
    )
    assert refund.status == 200, await refund.text()
    assert (await refund.json())["processor_reference"].startswith("re_")
    assert await balance(surge, "refunds:demo") == 1500
    async with surge.pool.acquire() as connection:
        assert (await check_ledger(connection)).ok


async def test_disputes_and_payouts_by_signed_webhook(surge_on_stripe: Surge) -> None:
    surge = surge_on_stripe
    _, gift = await surge.donate(donation(2500))
    dispute = DISPUTE | {"payment_intent": gift["processor_reference"], "id": "dp_engine"}
    opened = event("charge.dispute.created", dispute)
    assert await post_event(surge, opened) == 200
    assert await post_event(surge, opened) == 200  # a redelivery changes nothing
    assert await balance(surge, "disputes:demo") == 2500
    assert await balance(surge, "fees:stripe:USD") == gift["fee"] + 1500
    won = event("charge.dispute.closed", dispute | {"status": "won"}).replace(b"evt_charge_dispute_closed", b"evt_won")
    assert await post_event(surge, won) == 200
    assert await balance(surge, "disputes:demo") == 0
    payout_amount = 2500 - gift["fee"] - 1500
    assert await post_event(surge, event("payout.paid", PAYOUT | {"amount": payout_amount})) == 200
    assert await balance(surge, "bank:stripe:USD") == payout_amount
    assert await balance(surge, "clearing:stripe:USD") == 0

    forged = event("payout.paid", PAYOUT | {"id": "po_forged"}).replace(b"evt_payout_paid", b"evt_forged")
    response = await surge.client.post(
        "/v1/webhooks/stripe", data=forged, headers={"Stripe-Signature": sign(forged, secret="whsec_wrong")}
    )
    assert response.status == 400
    stale = await surge.client.post(
        "/v1/webhooks/stripe",
        data=forged,
        headers={"Stripe-Signature": sign(forged, timestamp=int(time.time()) - 3600)},
    )
    assert stale.status == 400
    assert await balance(surge, "bank:stripe:USD") == payout_amount


async def test_localstripe_delivers_payment_intent_events_to_the_engine(
    surge_on_stripe: Surge, localstripe_url: str
) -> None:
    surge = surge_on_stripe
    url = f"http://127.0.0.1:{surge.client.port}/v1/webhooks/stripe"
    configuration = {"url": url, "secret": WEBHOOK_SECRET, "events": ["payment_intent.succeeded"]}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{localstripe_url}/_config/webhooks/surge-tests", json=configuration) as response,
    ):
        assert response.status == 200
    status, gift = await surge.donate(donation(1200))
    assert status == 201
    # localstripe keeps webhook registrations across tests and delivers each event about a second late, so events
    # of other tests' charges may arrive here too: only this donation's PaymentIntent counts.
    mine = """SELECT type FROM surge.processor_events
               WHERE processor = 'stripe' AND payload -> 'data' -> 'object' ->> 'id' = $1"""
    types = await wait_until(
        lambda: surge.pool.fetch(mine, gift["processor_reference"]), timeout=10, what="localstripe's webhook event"
    )
    assert [row["type"] for row in types] == ["charge_succeeded"]
    # The donation was already settled by the charge's answer: the event confirms it and posts nothing twice.
    assert await balance(surge, "contributions:demo") == -1200
