"""The Stripe adapter against a real localstripe through the real ``stripe`` SDK (async, aiohttp): charges,
declines, authentication, invalid requests, lookups, refunds and balance transactions.

Faults localstripe cannot produce (429, 5xx, a hung response) come from a tiny aiohttp server that answers like
Stripe does; the SDK and the adapter run unmodified against it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe
from aiohttp import web

from adapters.base import (
    BalanceTransactionType,
    ChargeRequest,
    ChargeStatus,
    RefundRequest,
    RefundStatus,
)
from adapters.stripe import StripeProcessor, StripeRequestError
from ledger.money import Money
from tests.stripe.conftest import stripe_config

CARD_DECLINED_AT_CHARGE = "4000000000000341"  # localstripe: attaches, then declines when charged
CARD_REQUIRES_AUTHENTICATION = "4000002500003155"  # 3-D Secure required


def donation(key: str = "key-1", payment_method: str = "pm_card_visa", **overrides: Any) -> ChargeRequest:
    values: dict[str, Any] = {
        "idempotency_key": key,
        "donation_id": f"donation-{key}",
        "amount": Money(2500, "USD"),
        "payment_method": payment_method,
        "campaign": "spring-appeal",
    }
    return ChargeRequest(**(values | overrides))


async def card(client: stripe.StripeClient, number: str) -> str:
    """A PaymentMethod for a test card number (raw numbers reach localstripe only, never Surge's API)."""
    method = await client.v1.payment_methods.create_async(
        params={"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"}}
    )
    return method.id


async def intent(client: stripe.StripeClient, reference: str) -> dict[str, Any]:
    return (await client.v1.payment_intents.retrieve_async(reference)).to_dict()


# --- charge --------------------------------------------------------------------------------------------------------


async def test_charge_succeeds_with_fee_and_metadata(processor: StripeProcessor, stripe_client: stripe.StripeClient):
    result = await processor.charge(donation(metadata={"donor_country": "FR"}))

    assert result.status is ChargeStatus.SUCCEEDED
    assert result.processor_reference is not None and result.processor_reference.startswith("pi_")
    assert result.amount == Money(2500, "USD")
    # The fee comes from the charge's balance transaction (expanded latest_charge.balance_transaction); localstripe
    # records every balance transaction with fee 0, so 0 is the right answer here, and None would mean "unknown".
    assert result.fee == Money(0, "USD")
    stored = await intent(stripe_client, result.processor_reference)
    assert (stored["amount"], stored["currency"], stored["status"]) == (2500, "usd", "succeeded")
    assert stored["metadata"] == {
        "donor_country": "FR",
        "donation_id": "donation-key-1",
        "campaign": "spring-appeal",
        "idempotency_key": "key-1",
    }


async def test_zero_decimal_currency_is_sent_in_whole_units(
    processor: StripeProcessor, stripe_client: stripe.StripeClient
):
    result = await processor.charge(donation(amount=Money(500, "JPY")))

    assert result.status is ChargeStatus.SUCCEEDED
    assert result.amount == Money(500, "JPY")
    assert result.processor_reference is not None
    stored = await intent(stripe_client, result.processor_reference)
    assert (stored["amount"], stored["currency"]) == (500, "jpy")


@pytest.mark.parametrize("payment_method", ["pm_card_chargeCustomerFail", CARD_DECLINED_AT_CHARGE])
async def test_card_declined_at_charge_time(
    processor: StripeProcessor, stripe_client: stripe.StripeClient, payment_method: str
):
    if payment_method.isdigit():
        payment_method = await card(stripe_client, payment_method)

    result = await processor.charge(donation(payment_method=payment_method))

    assert result.status is ChargeStatus.DECLINED
    # localstripe's 402 carries code card_declined but neither decline_code nor the PaymentIntent (Stripe sends both).
    assert result.decline_code == "card_declined"
    assert result.message == "Your card was declined."
    assert result.fee is None


async def test_authentication_required_is_pending(processor: StripeProcessor, stripe_client: stripe.StripeClient):
    result = await processor.charge(donation(payment_method=await card(stripe_client, CARD_REQUIRES_AUTHENTICATION)))

    assert result.status is ChargeStatus.PENDING
    assert result.processor_reference is not None and result.processor_reference.startswith("pi_")
    assert result.message is not None and "authentication" in result.message
    assert (await intent(stripe_client, result.processor_reference))["status"] == "requires_action"


@pytest.mark.parametrize(
    ("payment_method", "amount"),
    [("pm_does_not_exist", Money(2500, "USD")), ("pm_card_visa", Money(0, "USD"))],
    ids=["unknown-payment-method", "zero-amount"],
)
async def test_invalid_request_fails(processor: StripeProcessor, payment_method: str, amount: Money):
    result = await processor.charge(donation(payment_method=payment_method, amount=amount))

    assert result.status is ChargeStatus.FAILED
    assert result.message


async def test_amount_stripe_cannot_express_fails_without_a_request(localstripe_url: str):
    # 1.50 ariary: Money counts MGA in ISO hundredths, Stripe in whole ariary. The closed port proves nothing is sent.
    processor = StripeProcessor(stripe_config(f"http://127.0.0.1:{closed_port()}"))
    try:
        result = await processor.charge(donation(amount=Money(150, "MGA")))
    finally:
        await processor.close()

    assert result.status is ChargeStatus.FAILED
    assert result.message is not None and "MGA" in result.message


async def test_rejected_api_key_fails_naming_the_setting(localstripe_url: str):
    # localstripe accepts only sk_ keys: a restricted key stands in for a revoked one (401 → AuthenticationError).
    processor = StripeProcessor(stripe_config(localstripe_url, secret_key="rk_test_revoked"))
    try:
        result = await processor.charge(donation())
    finally:
        await processor.close()

    assert result.status is ChargeStatus.FAILED
    assert result.message is not None and "STRIPE_SECRET_KEY" in result.message


# --- faults ------------------------------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_connection_refused_is_unknown_everywhere():
    # The adapter cannot tell whether a request that failed in transit reached Stripe (after an SDK retry, an
    # earlier attempt may have), so it says UNKNOWN and leaves the answer to lookup, even for a refused connection.
    processor = StripeProcessor(stripe_config(f"http://127.0.0.1:{closed_port()}", max_network_retries=0))
    try:
        charge = await processor.charge(donation())
        lookup = await processor.lookup("key-1", "pi_123")
        refund = await processor.refund(RefundRequest("refund-key", "refund-1", "pi_123", Money(100, "USD")))
        with pytest.raises(StripeRequestError):
            await processor.balance_transactions(datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC))
    finally:
        await processor.close()

    assert charge.status is ChargeStatus.UNKNOWN
    assert lookup.status is ChargeStatus.UNKNOWN
    assert refund.status is RefundStatus.UNKNOWN


@dataclass
class FakeStripe:
    """Answers every request with ``status`` and a Stripe-shaped error ``body``, after ``delay_s``."""

    url: str = ""
    status: int = 500
    body: dict[str, Any] = field(default_factory=dict)
    delay_s: float = 0.0
    idempotency_keys: list[str | None] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.idempotency_keys.append(request.headers.get("Idempotency-Key"))
        if self.delay_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), self.delay_s)
        return web.json_response(self.body, status=self.status)


@pytest.fixture
async def fake_stripe() -> AsyncIterator[FakeStripe]:
    fake = FakeStripe()
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield fake
    fake.release.set()
    await runner.cleanup()


def error_body(kind: str, message: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, "code": code}}


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (429, error_body("invalid_request_error", "Too many requests", "rate_limit"), ChargeStatus.RETRYABLE),
        (500, error_body("api_error", "Something went wrong"), ChargeStatus.UNKNOWN),
        (503, error_body("api_error", "Service unavailable"), ChargeStatus.UNKNOWN),
        (
            400,
            error_body("idempotency_error", "Keys for idempotent requests can only be used with the same parameters"),
            ChargeStatus.UNKNOWN,
        ),
        (403, error_body("invalid_request_error", "The provided key does not have access"), ChargeStatus.FAILED),
    ],
    ids=["429-rate-limited", "500", "503", "idempotency-key-reused", "403-permission"],
)
async def test_stripe_error_responses(
    fake_stripe: FakeStripe, status: int, body: dict[str, Any], expected: ChargeStatus
):
    fake_stripe.status, fake_stripe.body = status, body
    processor = StripeProcessor(stripe_config(fake_stripe.url, max_network_retries=0))
    try:
        result = await processor.charge(donation())
    finally:
        await processor.close()

    assert result.status is expected, result.message


async def test_stripe_server_errors_are_retried_by_the_sdk_with_the_same_key(fake_stripe: FakeStripe):
    fake_stripe.status, fake_stripe.body = 500, error_body("api_error", "Something went wrong")
    processor = StripeProcessor(stripe_config(fake_stripe.url, max_network_retries=1))
    try:
        result = await processor.charge(donation())
    finally:
        await processor.close()

    assert result.status is ChargeStatus.UNKNOWN
    first, second = fake_stripe.idempotency_keys
    assert first == second == "surge-charge-key-1"


async def test_hung_response_times_out_as_unknown(fake_stripe: FakeStripe):
    fake_stripe.delay_s, fake_stripe.status = 5.0, 200
    processor = StripeProcessor(stripe_config(fake_stripe.url, request_timeout_ms=200, max_network_retries=0))
    try:
        started = asyncio.get_running_loop().time()
        result = await processor.charge(donation())
        elapsed_s = asyncio.get_running_loop().time() - started
    finally:
        await processor.close()

    assert result.status is ChargeStatus.UNKNOWN
    assert elapsed_s < 2


async def test_local_rate_limit_refuses_without_sending(localstripe_url: str, stripe_client: stripe.StripeClient):
    processor = StripeProcessor(stripe_config(localstripe_url, rate_limit_per_second=1.0, rate_limit_wait_max_ms=0))
    try:
        first = await processor.charge(donation("key-1"))
        second = await processor.charge(donation("key-2"))
    finally:
        await processor.close()

    assert first.status is ChargeStatus.SUCCEEDED
    assert second.status is ChargeStatus.RETRYABLE
    listed = await stripe_client.v1.payment_intents.list_async()
    # localstripe's first charge is refused once for automatic_payment_methods (see processor.py), then succeeds.
    assert [item.metadata["idempotency_key"] for item in listed.data] == ["key-1"]


# --- lookup ------------------------------------------------------------------------------------------------------


async def test_lookup_by_reference(processor: StripeProcessor):
    charged = await processor.charge(donation())

    found = await processor.lookup("key-1", charged.processor_reference)

    assert found == charged


async def test_lookup_by_idempotency_key_in_metadata(processor: StripeProcessor):
    # localstripe has no Search API (404): the adapter falls back to listing PaymentIntents and reading metadata.
    await processor.charge(donation("other-key"))
    charged = await processor.charge(donation("key-1"))

    found = await processor.lookup("key-1", None)

    assert found.status is ChargeStatus.SUCCEEDED
    assert found.processor_reference == charged.processor_reference
    assert found.fee == Money(0, "USD")


async def test_lookup_finds_declined_and_pending_charges(
    processor: StripeProcessor, stripe_client: stripe.StripeClient
):
    await processor.charge(donation("declined", payment_method="pm_card_chargeCustomerFail"))
    await processor.charge(donation("pending", payment_method=await card(stripe_client, CARD_REQUIRES_AUTHENTICATION)))

    declined = await processor.lookup("declined", None)
    pending = await processor.lookup("pending", None)

    # The decline left a PaymentIntent behind (requires_payment_method with last_payment_error): lookup names it.
    assert declined.status is ChargeStatus.DECLINED
    assert declined.decline_code == "card_declined"
    assert declined.processor_reference is not None
    assert pending.status is ChargeStatus.PENDING


async def test_lookup_not_found(processor: StripeProcessor):
    await processor.charge(donation("key-1"))

    assert (await processor.lookup("never-sent", None)).status is ChargeStatus.NOT_FOUND
    assert (await processor.lookup("never-sent", "pi_missing")).status is ChargeStatus.NOT_FOUND


async def test_lookup_that_cannot_see_everything_is_unknown_not_not_found(localstripe_url: str):
    processor = StripeProcessor(stripe_config(localstripe_url, lookup_scan_max=1))
    try:
        await processor.charge(donation("first"))
        await processor.charge(donation("second"))
        result = await processor.lookup("third", None)
    finally:
        await processor.close()

    assert result.status is ChargeStatus.UNKNOWN


# --- refunds -------------------------------------------------------------------------------------------------------


async def refunded_amount(client: stripe.StripeClient, reference: str) -> int:
    return int((await intent(client, reference))["latest_charge"]["amount_refunded"])


async def test_full_refund(processor: StripeProcessor, stripe_client: stripe.StripeClient):
    charged = await processor.charge(donation())
    assert charged.processor_reference is not None

    result = await processor.refund(
        RefundRequest("refund-key", "refund-1", charged.processor_reference, charged.amount)
    )

    assert result.status is RefundStatus.SUCCEEDED
    assert result.processor_reference is not None and result.processor_reference.startswith("re_")
    assert await refunded_amount(stripe_client, charged.processor_reference) == 2500


async def test_partial_refunds(processor: StripeProcessor, stripe_client: stripe.StripeClient):
    charged = await processor.charge(donation())
    reference = charged.processor_reference
    assert reference is not None

    first = await processor.refund(RefundRequest("refund-a", "refund-a", reference, Money(1000, "USD")))
    second = await processor.refund(RefundRequest("refund-b", "refund-b", reference, Money(500, "USD")))

    assert (first.status, second.status) == (RefundStatus.SUCCEEDED, RefundStatus.SUCCEEDED)
    assert first.processor_reference != second.processor_reference
    assert await refunded_amount(stripe_client, reference) == 1500
    # localstripe would accept a further refund beyond the 2500 charged (real Stripe refuses it); the engine
    # refuses over-refunds itself before calling the adapter, so it is not tested here.
    stored = await stripe_client.v1.refunds.list_async(params={"payment_intent": reference})
    assert {item.metadata["surge_refund_id"] for item in stored.data} == {"refund-a", "refund-b"}


async def test_refund_of_declined_or_unknown_charge_fails(processor: StripeProcessor):
    declined = await processor.charge(donation(payment_method="pm_card_chargeCustomerFail"))
    declined_reference = (await processor.lookup("key-1", None)).processor_reference
    assert declined.status is ChargeStatus.DECLINED and declined_reference is not None

    of_declined = await processor.refund(RefundRequest("r1", "r1", declined_reference, Money(2500, "USD")))
    of_unknown = await processor.refund(RefundRequest("r2", "r2", "pi_missing", Money(2500, "USD")))

    assert of_declined.status is RefundStatus.FAILED
    assert of_unknown.status is RefundStatus.FAILED


# --- balance transactions ----------------------------------------------------------------------------------------


async def test_balance_transactions_for_a_charge_and_a_refund(processor: StripeProcessor):
    charged = await processor.charge(donation())
    assert charged.processor_reference is not None
    refund = await processor.refund(RefundRequest("r", "r", charged.processor_reference, Money(1000, "USD")))
    now = datetime.now(UTC)

    transactions = await processor.balance_transactions(now - timedelta(minutes=1), now + timedelta(minutes=1))

    by_type = {transaction.type: transaction for transaction in transactions}
    assert set(by_type) == {BalanceTransactionType.CHARGE, BalanceTransactionType.REFUND}
    charge, refunded = by_type[BalanceTransactionType.CHARGE], by_type[BalanceTransactionType.REFUND]
    assert (charge.amount, charge.fee) == (Money(2500, "USD"), Money(0, "USD"))
    assert charge.source_reference is not None and charge.source_reference.startswith("ch_")
    assert (refunded.amount, refunded.source_reference) == (Money(-1000, "USD"), refund.processor_reference)
    # localstripe copies no metadata to charges: the donation id comes from each source's PaymentIntent.
    assert charge.donation_id == refunded.donation_id == "donation-key-1"
    assert all(now - timedelta(minutes=1) <= transaction.created <= now for transaction in transactions)


async def test_balance_transactions_outside_the_window_are_left_out(processor: StripeProcessor):
    await processor.charge(donation())
    now = datetime.now(UTC)

    assert await processor.balance_transactions(now - timedelta(days=2), now - timedelta(days=1)) == []
    with pytest.raises(ValueError, match="time-zone"):
        await processor.balance_transactions(datetime(2025, 1, 1), datetime(2025, 1, 2))


async def test_close_is_idempotent(localstripe_url: str):
    processor = StripeProcessor(stripe_config(localstripe_url))
    assert (await processor.charge(donation())).status is ChargeStatus.SUCCEEDED
    await processor.close()
    await processor.close()
