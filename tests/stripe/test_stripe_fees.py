"""Fees in the settlement currency, through the whole engine on localstripe and signed webhooks at /v1/webhooks/stripe.

Stripe reports a fee on the charge's (or dispute's) balance transaction, in the balance's currency, which need not be
the charge's. localstripe records every fee as 0 in the charge's currency and sends no charge or dispute events, so
the events here are built in Stripe's shape (balance transactions expanded where Stripe would expand them) and signed
with the real algorithm. The donations are real: made through the API and pending at localstripe (3-D Secure), so
nothing but these events settles them.
"""

from __future__ import annotations

import json
import time
from typing import Any

import stripe

from adapters.base import ChargeStatus, EventType
from adapters.stripe import StripeProcessor
from adapters.stripe.transformers import charge_result_from_payment_intent
from ledger import reads
from ledger.check import check_ledger
from ledger.money import Money
from tests.e2e.conftest import Surge, donation
from tests.stripe.test_stripe_webhooks import DISPUTE, parse, sign
from tests.waiting import wait_until

CARD_REQUIRES_AUTHENTICATION = "4000002500003155"


def stripe_event(event_id: str, event_type: str, obj: dict[str, Any]) -> bytes:
    envelope = {
        "id": event_id,
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "type": event_type,
        "data": {"object": obj},
    }
    return json.dumps(envelope).encode()


def balance_transaction(fee: int, currency: str, amount: int = 2500) -> dict[str, Any]:
    return {
        "id": f"txn_{currency}_{fee}",
        "object": "balance_transaction",
        "amount": amount,
        "currency": currency,
        "fee": fee,
        "net": amount - fee,
        "reporting_category": "charge",
        "type": "charge",
        "created": int(time.time()),
    }


def payment_intent(gift: dict[str, Any], transaction: dict[str, Any] | str) -> dict[str, Any]:
    """A succeeded PaymentIntent as Stripe sends it, its latest charge's balance transaction expanded or not."""
    metadata = {"donation_id": gift["id"], "campaign": "demo"}
    return {
        "id": gift["processor_reference"],
        "object": "payment_intent",
        "amount": gift["amount"],
        "amount_received": gift["amount"],
        "currency": "usd",
        "status": "succeeded",
        "metadata": metadata,
        "latest_charge": {"id": "ch_fee", "object": "charge", "balance_transaction": transaction},
    }


def charge(gift: dict[str, Any], transaction: dict[str, Any] | str) -> dict[str, Any]:
    return {
        "id": "ch_fee",
        "object": "charge",
        "amount": gift["amount"],
        "amount_captured": gift["amount"],
        "currency": "usd",
        "captured": True,
        "paid": True,
        "status": "succeeded",
        "payment_intent": gift["processor_reference"],
        "metadata": {"donation_id": gift["id"], "campaign": "demo"},
        "balance_transaction": transaction,
    }


async def post_event(surge: Surge, body: bytes) -> int:
    response = await surge.client.post(
        "/v1/webhooks/stripe", data=body, headers={"Stripe-Signature": sign(body), "Content-Type": "application/json"}
    )
    return response.status


async def balance(surge: Surge, account: str) -> int:
    async with surge.pool.acquire() as connection:
        try:
            return (await reads.balance(connection, account)).posted
        except reads.AccountNotFoundError:
            return 0


async def ledger_is_clean(surge: Surge) -> bool:
    async with surge.pool.acquire() as connection:
        return (await check_ledger(connection)).ok


async def pending_gift(surge: Surge, stripe_client: stripe.StripeClient, amount: int = 2500) -> dict[str, Any]:
    method = await stripe_client.v1.payment_methods.create_async(
        params={
            "type": "card",
            "card": {"number": CARD_REQUIRES_AUTHENTICATION, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )
    status, gift = await surge.donate(donation(amount, method.id))
    assert status == 202 and gift["status"] == "processing", gift
    # Charged in the background: waiting for authentication at localstripe once it has its PaymentIntent.
    reference = await wait_until(
        lambda: surge.pool.fetchval(
            "SELECT processor_reference FROM surge.donations WHERE id = $1 AND status = 'pending'", gift["id"]
        ),
        what="the donation's PaymentIntent",
    )
    return gift | {"processor_reference": reference}


# --- the transformer keeps the fee's currency -----------------------------------------------------------------------


def test_a_charge_fee_is_in_its_balance_transaction_currency() -> None:
    gift = {"id": "don_1", "processor_reference": "pi_1", "amount": 2500}
    result = charge_result_from_payment_intent(payment_intent(gift, balance_transaction(175, "eur")))
    assert result.status is ChargeStatus.SUCCEEDED
    assert (result.amount, result.fee) == (Money(2500, "USD"), Money(175, "EUR"))


def test_charge_updated_with_its_balance_transaction_is_a_late_fee(processor: StripeProcessor) -> None:
    gift = {"id": "don_1", "processor_reference": "pi_1", "amount": 2500}
    mapped = parse(processor, stripe_event("evt_1", "charge.updated", charge(gift, balance_transaction(90, "gbp"))))
    assert mapped.type is EventType.CHARGE_UPDATED
    assert (mapped.donation_id, mapped.processor_reference, mapped.fee) == ("don_1", "pi_1", Money(90, "GBP"))
    # As webhooks send it, the balance transaction is only named: nothing to act on (the sweep books that fee).
    unexpanded = parse(processor, stripe_event("evt_2", "charge.updated", charge(gift, "txn_1")))
    assert unexpanded.type is EventType.IGNORED


# --- the engine books fees in their own currency ------------------------------------------------------------------


async def test_a_charge_fee_in_another_currency_is_booked_in_that_currency(
    surge_on_stripe: Surge, stripe_client: stripe.StripeClient
) -> None:
    surge = surge_on_stripe
    gift = await pending_gift(surge, stripe_client)
    succeeded = stripe_event(
        "evt_pi_eur", "payment_intent.succeeded", payment_intent(gift, balance_transaction(175, "eur"))
    )
    assert await post_event(surge, succeeded) == 200

    assert await balance(surge, "contributions:demo") == -2500
    assert await balance(surge, "clearing:stripe:USD") == 2500  # the charge, untouched by the fee
    assert await balance(surge, "fees:stripe:USD") == 0
    assert await balance(surge, "fees:stripe:EUR") == 175
    assert await balance(surge, "clearing:stripe:EUR") == -175
    row = await surge.pool.fetchrow(
        "SELECT status, fee_minor, fee_currency FROM surge.donations WHERE id = $1", gift["id"]
    )
    assert tuple(row) == ("succeeded", 175, "EUR")
    assert await ledger_is_clean(surge)


async def test_a_dispute_fee_in_another_currency_books_and_answers_200(
    surge_on_stripe: Surge, stripe_client: stripe.StripeClient
) -> None:
    surge = surge_on_stripe
    gift = await pending_gift(surge, stripe_client)
    assert (
        await post_event(
            surge,
            stripe_event("evt_pi", "payment_intent.succeeded", payment_intent(gift, balance_transaction(0, "usd"))),
        )
        == 200
    )
    withdrawal = {**DISPUTE["balance_transactions"][0], "amount": -2300, "currency": "eur", "fee": 1500, "net": -3800}
    dispute = DISPUTE | {
        "id": "dp_eur",
        "payment_intent": gift["processor_reference"],
        "balance_transactions": [withdrawal],
    }
    opened = stripe_event("evt_dispute_eur", "charge.dispute.created", dispute)

    assert await post_event(surge, opened) == 200
    assert await post_event(surge, opened) == 200  # a redelivery changes nothing
    assert await balance(surge, "disputes:demo") == 2500
    assert await balance(surge, "clearing:stripe:USD") == 0
    assert await balance(surge, "fees:stripe:EUR") == 1500
    assert await balance(surge, "clearing:stripe:EUR") == -1500
    assert await balance(surge, "fees:stripe:USD") == 0
    assert await ledger_is_clean(surge)


async def test_a_late_fee_is_booked_once_in_its_currency(
    surge_on_stripe: Surge, stripe_client: stripe.StripeClient
) -> None:
    surge = surge_on_stripe
    gift = await pending_gift(surge, stripe_client)
    # Settled by an event that names the balance transaction without its fee: the fee is unknown, not zero.
    assert (
        await post_event(surge, stripe_event("evt_pi", "payment_intent.succeeded", payment_intent(gift, "txn_later")))
        == 200
    )
    row = await surge.pool.fetchrow(
        "SELECT status, fee_minor, fee_currency FROM surge.donations WHERE id = $1", gift["id"]
    )
    assert tuple(row) == ("succeeded", None, None)

    updated = charge(gift, balance_transaction(90, "gbp"))
    assert await post_event(surge, stripe_event("evt_charge_updated", "charge.updated", updated)) == 200
    assert await balance(surge, "fees:stripe:GBP") == 90
    # Duplicates: the same event again, the same news under another event id, and a late copy of the charge's own
    # event carrying a fee: none books a second fee.
    assert await post_event(surge, stripe_event("evt_charge_updated", "charge.updated", updated)) == 200
    assert await post_event(surge, stripe_event("evt_charge_updated_2", "charge.updated", updated)) == 200
    late_copy = payment_intent(gift, balance_transaction(90, "gbp"))
    assert await post_event(surge, stripe_event("evt_pi_again", "payment_intent.succeeded", late_copy)) == 200

    assert await balance(surge, "fees:stripe:GBP") == 90
    assert await balance(surge, "clearing:stripe:GBP") == -90
    assert await balance(surge, "fees:stripe:USD") == 0
    assert await balance(surge, "clearing:stripe:USD") == 2500
    row = await surge.pool.fetchrow("SELECT fee_minor, fee_currency FROM surge.donations WHERE id = $1", gift["id"])
    assert tuple(row) == (90, "GBP")
    fee_entries = await surge.pool.fetchval(
        "SELECT count(*) FROM ledger.entries WHERE reference = $1", f"fee:{gift['id']}"
    )
    assert fee_entries == 1
    assert await ledger_is_clean(surge)


async def test_a_fee_reported_before_the_charge_settles_is_booked_by_its_settlement(
    surge_on_stripe: Surge, stripe_client: stripe.StripeClient
) -> None:
    surge = surge_on_stripe
    gift = await pending_gift(surge, stripe_client)
    # Processors do not promise order: the fee can arrive while the donation is still pending.
    updated = charge(gift, balance_transaction(120, "eur"))
    assert await post_event(surge, stripe_event("evt_charge_updated", "charge.updated", updated)) == 200
    assert await balance(surge, "fees:stripe:EUR") == 0  # nothing is booked for a charge not known to succeed
    assert (
        await post_event(surge, stripe_event("evt_pi", "payment_intent.succeeded", payment_intent(gift, "txn_1")))
        == 200
    )

    assert await balance(surge, "contributions:demo") == -2500
    assert await balance(surge, "fees:stripe:EUR") == 120
    assert await ledger_is_clean(surge)
