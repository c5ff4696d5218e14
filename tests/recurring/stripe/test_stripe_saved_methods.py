"""Saved methods through the Stripe adapter against a real localstripe: a Customer with the PaymentMethod attached,
charged off-session; authentication asked off-session is a decline; detach; and plans charged through Stripe."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import stripe

from adapters.base import (
    AUTHENTICATION_REQUIRED,
    ChargeRequest,
    ChargeStatus,
    SaveStatus,
    off_session_token,
)
from adapters.stripe import StripeProcessor
from engine.keys import Role
from ledger.money import Money
from tests.e2e.conftest import running_surge, surge_settings
from tests.recurring.conftest import FAST_SCHEDULER, create_plan, open_installments, plan_body
from tests.stripe.conftest import stripe_config
from tests.stripe.test_stripe_adapter import CARD_DECLINED_AT_CHARGE, CARD_REQUIRES_AUTHENTICATION, card
from tests.waiting import wait_until


def charge(token: str, key: str) -> ChargeRequest:
    return ChargeRequest(key, f"donation-{key}", Money(1200, "USD"), token, "spring-appeal")


async def test_a_saved_card_is_a_customer_with_the_method_attached_and_charged_off_session(
    processor: StripeProcessor, stripe_client: stripe.StripeClient
) -> None:
    method = await card(stripe_client, "4242424242424242")
    saved = await processor.save_payment_method(method, "jane@example.org", "Jane Doe")
    assert saved.status is SaveStatus.SAVED and saved.method is not None
    details = saved.method
    assert details.customer_reference.startswith("cus_")
    assert (details.brand, details.last4, details.exp_month, details.exp_year) == ("visa", "4242", 12, 2034)
    attached = await stripe_client.v1.payment_methods.retrieve_async(details.payment_method_reference)
    assert attached.customer == details.customer_reference
    token = off_session_token(details.customer_reference, details.payment_method_reference)
    result = await processor.charge(charge(token, "saved-1"))
    assert result.status is ChargeStatus.SUCCEEDED, result
    assert (result.card_brand, result.card_last4) == ("visa", "4242")
    intent = await stripe_client.v1.payment_intents.retrieve_async(result.processor_reference or "")
    assert intent.customer == details.customer_reference and intent.payment_method == attached.id
    assert await processor.refresh_payment_method(details) == details
    assert await processor.detach_payment_method(details)
    detached = await stripe_client.v1.payment_methods.retrieve_async(details.payment_method_reference)
    assert detached.customer is None


async def test_a_saved_card_declined_at_charge_time(
    processor: StripeProcessor, stripe_client: stripe.StripeClient
) -> None:
    saved = await processor.save_payment_method(
        await card(stripe_client, CARD_DECLINED_AT_CHARGE), "jane@example.org", "Jane Doe"
    )
    assert saved.method is not None
    token = off_session_token(saved.method.customer_reference, saved.method.payment_method_reference)
    assert (await processor.charge(charge(token, "declined-1"))).status is ChargeStatus.DECLINED


async def test_authentication_asked_off_session_is_a_decline_and_the_intent_is_cancelled(
    processor: StripeProcessor, stripe_client: stripe.StripeClient
) -> None:
    saved = await processor.save_payment_method(
        await card(stripe_client, CARD_REQUIRES_AUTHENTICATION), "jane@example.org", "Jane Doe"
    )
    assert saved.method is not None
    token = off_session_token(saved.method.customer_reference, saved.method.payment_method_reference)
    result = await processor.charge(charge(token, "auth-1"))
    assert (result.status, result.decline_code) == (ChargeStatus.DECLINED, AUTHENTICATION_REQUIRED)
    intent = await stripe_client.v1.payment_intents.retrieve_async(result.processor_reference or "")
    assert intent.status == "canceled"


async def test_a_card_refused_when_attached_is_not_saved(processor: StripeProcessor) -> None:
    saved = await processor.save_payment_method("pm_card_visa_chargeDeclined", "jane@example.org", "Jane Doe")
    assert saved.status is SaveStatus.DECLINED and saved.method is None


async def test_a_plan_is_charged_through_stripe(
    database_url: str, localstripe_url: str, tmp_path: Path, stripe_client: stripe.StripeClient
) -> None:
    settings = surge_settings(database_url, tmp_path, **FAST_SCHEDULER)
    processors = [StripeProcessor(stripe_config(localstripe_url))]
    async with running_surge(database_url, settings, processors) as surge:  # type: ignore[arg-type]
        method = await card(stripe_client, "4242424242424242")
        start = datetime.now(UTC) - timedelta(weeks=1, minutes=1)
        status, plan = await create_plan(surge, plan_body(1200, method, installments=2, start=start))
        assert status == 201, plan

        async def charged() -> bool:
            count = await surge.pool.fetchval(
                "SELECT count(*) FROM surge.recurring_installments WHERE status = 'succeeded'"
            )
            return count == 2 and await open_installments(surge.pool) == 0

        await wait_until(charged, what="both installments charged through Stripe")
        customer = await surge.pool.fetchval("SELECT customer_reference FROM surge.saved_payment_methods")
        intents = await stripe_client.v1.payment_intents.list_async()
        mine = [i for i in intents.data if i.customer == customer and i.status == "succeeded"]
        assert len(mine) == 2
        response = await surge.client.get(f"/v1/recurring/plans/{plan['id']}", headers=surge.auth(Role.FINANCE))
        assert (await response.json())["status"] == "completed"
