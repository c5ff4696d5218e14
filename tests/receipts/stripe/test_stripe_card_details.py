"""The card on a Stripe receipt is Stripe's: brand and last four digits from the PaymentIntent (its expanded
``payment_method``; on real Stripe also ``latest_charge.payment_method_details``), through charge and lookup, to the
donation's row and its receipt — against a real localstripe."""

from __future__ import annotations

import stripe

from adapters.base import ChargeRequest, ChargeStatus
from adapters.stripe import StripeProcessor
from ledger.money import Money
from tests.e2e.conftest import Surge, donation
from tests.waiting import wait_until

CARD_MASTERCARD = "5555555555554444"


def charge_request(key: str, payment_method: str) -> ChargeRequest:
    return ChargeRequest(key, f"donation-{key}", Money(2500, "USD"), payment_method, "spring-appeal")


async def test_charge_and_lookup_report_the_card(processor: StripeProcessor, stripe_client: stripe.StripeClient):
    method = await stripe_client.v1.payment_methods.create_async(
        params={"type": "card", "card": {"number": CARD_MASTERCARD, "exp_month": 12, "exp_year": 2034, "cvc": "123"}}
    )
    result = await processor.charge(charge_request("card-1", method.id))
    assert result.status is ChargeStatus.SUCCEEDED
    assert result.card_last4 == "4444" and result.card_brand  # localstripe names every card "visa"
    looked_up = await processor.lookup("card-1", result.processor_reference)
    assert (looked_up.card_brand, looked_up.card_last4) == (result.card_brand, "4444")


async def test_a_donation_charged_through_stripe_stores_the_card_and_gets_a_receipt(surge_on_stripe: Surge):
    status, gift = await surge_on_stripe.donate(donation(payment_method="pm_card_visa"))
    assert status == 201, gift
    row = await surge_on_stripe.pool.fetchrow(
        "SELECT card_brand, card_last4 FROM surge.donations WHERE id = $1", gift["id"]
    )
    assert (row["card_brand"], row["card_last4"]) == ("visa", "4242")

    async def receipt_written() -> str | None:
        return await surge_on_stripe.pool.fetchval(
            "SELECT status FROM surge.receipts WHERE donation_id = $1 AND status = 'sent'", gift["id"]
        )

    await wait_until(receipt_written, what="the receipt written as .eml")
