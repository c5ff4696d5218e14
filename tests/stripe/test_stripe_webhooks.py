"""Webhook verification and translation.

localstripe delivers signed ``payment_intent.*`` events for real: a tiny aiohttp receiver hands the raw body and
headers to ``parse_webhook``. localstripe sends no ``charge.refunded``, ``charge.dispute.*`` or ``payout.*`` events
(and Stripe's CLI is not available here), so those payloads are written below in the shape Stripe documents and
signed in the test with Stripe's algorithm, ``t=<unix time>,v1=hex(HMAC-SHA256(secret, f"{t}.{body}"))``,
implemented independently of the SDK that verifies them.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from adapters.base import EventType, ProcessorEvent, WebhookPayloadError, WebhookSignatureError
from adapters.stripe import StripeProcessor
from ledger.money import Money
from tests.stripe.conftest import WEBHOOK_SECRET, stripe_config
from tests.stripe.test_stripe_adapter import donation

DELIVERY_TIMEOUT_S = 10  # localstripe sends each event once, about a second after it happens


def sign(body: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    signature = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={signature}"


@dataclass
class Receiver:
    url: str = ""
    deliveries: asyncio.Queue[tuple[bytes, dict[str, str]]] = field(default_factory=asyncio.Queue)

    async def handle(self, request: web.Request) -> web.Response:
        self.deliveries.put_nowait((await request.read(), dict(request.headers)))
        return web.Response()

    async def next(self) -> tuple[bytes, dict[str, str]]:
        return await asyncio.wait_for(self.deliveries.get(), DELIVERY_TIMEOUT_S)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/webhooks/stripe", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}/webhooks/stripe"
    yield receiver
    await runner.cleanup()


async def register_webhook(localstripe_url: str, url: str, events: list[str]) -> None:
    # localstripe keeps webhooks across DELETE /_config/data; one fixed id means each test replaces the last one.
    configuration = {"url": url, "secret": WEBHOOK_SECRET, "events": events}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{localstripe_url}/_config/webhooks/surge-tests", json=configuration) as response,
    ):
        assert response.status == 200


# --- delivered by localstripe --------------------------------------------------------------------------------------


async def test_localstripe_webhooks_verify_and_map(
    processor: StripeProcessor, localstripe_url: str, receiver: Receiver
):
    await register_webhook(localstripe_url, receiver.url, ["payment_intent.succeeded", "payment_intent.payment_failed"])
    succeeded = await processor.charge(donation("paid"))
    await processor.charge(donation("refused", payment_method="pm_card_chargeCustomerFail"))

    # Events of earlier tests still in localstripe's one-second delay reach this receiver too: keep ours only.
    deliveries: dict[str, tuple[bytes, dict[str, str]]] = {}
    events: dict[EventType, ProcessorEvent] = {}
    while len(events) < 2:
        delivery = await receiver.next()
        mapped = processor.parse_webhook(*delivery)
        if mapped.donation_id in ("donation-paid", "donation-refused"):
            events[mapped.type], deliveries[mapped.id] = mapped, delivery

    paid, failed = events[EventType.CHARGE_SUCCEEDED], events[EventType.CHARGE_FAILED]
    assert paid.processor_reference == succeeded.processor_reference
    assert (paid.donation_id, paid.amount) == ("donation-paid", Money(2500, "USD"))
    assert (failed.donation_id, failed.decline_code) == ("donation-refused", "card_declined")
    assert failed.processor_reference is not None and failed.processor_reference.startswith("pi_")
    assert paid.id.startswith("evt_") and paid.id != failed.id
    assert paid.raw["type"] == "payment_intent.succeeded"

    body, headers = deliveries[paid.id]
    lower_case = {name.lower(): value for name, value in headers.items()}
    assert processor.parse_webhook(body, lower_case).id == processor.parse_webhook(body, headers).id
    forged = body.replace(b'"amount": 2500', b'"amount": 25')
    assert forged != body
    with pytest.raises(WebhookSignatureError):
        processor.parse_webhook(forged, headers)
    with pytest.raises(WebhookSignatureError, match="missing"):
        processor.parse_webhook(body, {"Content-Type": "application/json"})
    other = StripeProcessor(stripe_config(localstripe_url, webhook_secret="whsec_someone_else"))
    try:
        with pytest.raises(WebhookSignatureError):
            other.parse_webhook(body, headers)
    finally:
        await other.close()


# --- signature checks ----------------------------------------------------------------------------------------------


def event(event_type: str, obj: dict[str, Any], **data: Any) -> bytes:
    envelope = {
        "id": f"evt_{event_type.replace('.', '_')}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
        "data": {"object": obj, **data},
    }
    return json.dumps(envelope).encode()


PAYOUT = {
    "id": "po_1Surge",
    "object": "payout",
    "amount": 120_000,
    "currency": "usd",
    "arrival_date": 1_790_000_000,
    "automatic": True,
    "method": "standard",
    "status": "paid",
    "type": "bank_account",
    "metadata": {},
}


def test_signature_timestamps_within_tolerance_pass_and_stale_ones_fail(processor: StripeProcessor):
    body = event("payout.paid", PAYOUT)
    now = int(time.time())

    assert processor.parse_webhook(body, {"Stripe-Signature": sign(body, timestamp=now - 280)}).id
    with pytest.raises(WebhookSignatureError, match="tolerance"):
        processor.parse_webhook(body, {"Stripe-Signature": sign(body, timestamp=now - 301)})


@pytest.mark.parametrize(
    "header",
    ["", "garbage", "t=notanumber,v1=abc", "t=1700000000", f"t={int(time.time())},v0=deadbeef", "v1=deadbeef"],
    ids=["empty", "garbage", "bad-timestamp", "no-signature", "wrong-scheme", "no-timestamp"],
)
def test_malformed_signature_headers_are_rejected(processor: StripeProcessor, header: str):
    with pytest.raises(WebhookSignatureError):
        processor.parse_webhook(event("payout.paid", PAYOUT), {"Stripe-Signature": header})


def test_body_that_is_not_utf8_is_rejected(processor: StripeProcessor):
    body = b"\xff\xfe not text"
    with pytest.raises(WebhookSignatureError):
        processor.parse_webhook(body, {"Stripe-Signature": sign(body)})


async def test_without_a_signing_secret_nothing_verifies(localstripe_url: str):
    unconfigured = StripeProcessor(stripe_config(localstripe_url, webhook_secret=None))
    try:
        body = event("payout.paid", PAYOUT)
        with pytest.raises(WebhookSignatureError, match="STRIPE_WEBHOOK_SECRET"):
            unconfigured.parse_webhook(body, {"Stripe-Signature": sign(body)})
    finally:
        await unconfigured.close()


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", json.dumps({"id": "evt_1", "type": "payout.paid", "created": 1}).encode()],
    ids=["not-json", "not-an-object", "no-data-object"],
)
def test_verified_but_unreadable_payloads(processor: StripeProcessor, body: bytes):
    with pytest.raises(WebhookPayloadError):
        processor.parse_webhook(body, {"Stripe-Signature": sign(body)})


# --- event types localstripe does not send (payloads shaped like Stripe's, signed here) ---------------------------


def parse(processor: StripeProcessor, body: bytes) -> ProcessorEvent:
    return processor.parse_webhook(body, {"Stripe-Signature": sign(body)})


CHARGE = {
    "id": "ch_1Surge",
    "object": "charge",
    "amount": 2500,
    "amount_captured": 2500,
    "amount_refunded": 1500,
    "balance_transaction": "txn_1Surge",
    "captured": True,
    "currency": "usd",
    "metadata": {"donation_id": "donation-1", "campaign": "spring-appeal", "idempotency_key": "key-1"},
    "paid": True,
    "payment_intent": "pi_1Surge",
    "refunded": False,
    "status": "succeeded",
}


def test_charge_refunded_amount_is_the_growth_of_amount_refunded(processor: StripeProcessor):
    mapped = parse(processor, event("charge.refunded", CHARGE, previous_attributes={"amount_refunded": 1000}))

    assert mapped.type is EventType.CHARGE_REFUNDED
    assert (mapped.processor_reference, mapped.donation_id) == ("pi_1Surge", "donation-1")
    assert mapped.amount == Money(500, "USD")
    assert mapped.object_id is None  # current API versions no longer embed the charge's refunds


def test_charge_refunded_with_embedded_refunds_names_the_newest(processor: StripeProcessor):
    refunds = {
        "object": "list",
        "data": [
            {
                "id": "re_new",
                "object": "refund",
                "amount": 500,
                "currency": "usd",
                "created": 200,
                "status": "succeeded",
            },
            {"id": "re_old", "object": "refund", "amount": 1000, "currency": "usd", "created": 100},
        ],
    }
    mapped = parse(processor, event("charge.refunded", CHARGE | {"refunds": refunds}))

    assert (mapped.object_id, mapped.amount) == ("re_new", Money(500, "USD"))


DISPUTE = {
    "id": "dp_1Surge",
    "object": "dispute",
    "amount": 2500,
    "currency": "usd",
    "charge": "ch_1Surge",
    "payment_intent": "pi_1Surge",
    "reason": "fraudulent",
    "status": "needs_response",
    "is_charge_refundable": False,
    "metadata": {},
    "balance_transactions": [
        {
            "id": "txn_dispute",
            "object": "balance_transaction",
            "amount": -2500,
            "currency": "usd",
            "fee": 1500,
            "net": -4000,
            "reporting_category": "dispute",
            "type": "adjustment",
            "source": "dp_1Surge",
            "created": 1_790_000_000,
        }
    ],
}


def test_dispute_created(processor: StripeProcessor):
    mapped = parse(processor, event("charge.dispute.created", DISPUTE))

    assert mapped.type is EventType.DISPUTE_CREATED
    assert (mapped.processor_reference, mapped.object_id) == ("pi_1Surge", "dp_1Surge")
    assert (mapped.amount, mapped.fee) == (Money(2500, "USD"), Money(1500, "USD"))


@pytest.mark.parametrize(
    ("status", "expected"),
    [("won", EventType.DISPUTE_WON), ("lost", EventType.DISPUTE_LOST), ("warning_closed", EventType.IGNORED)],
)
def test_dispute_closed(processor: StripeProcessor, status: str, expected: EventType):
    mapped = parse(processor, event("charge.dispute.closed", DISPUTE | {"status": status}))

    assert mapped.type is expected
    assert mapped.object_id == "dp_1Surge"
    if expected is not EventType.IGNORED:
        assert (mapped.processor_reference, mapped.amount) == ("pi_1Surge", Money(2500, "USD"))


def test_inquiry_moves_no_money_and_is_ignored(processor: StripeProcessor):
    inquiry = DISPUTE | {"status": "warning_needs_response", "balance_transactions": []}

    assert parse(processor, event("charge.dispute.created", inquiry)).type is EventType.IGNORED


def test_payout_paid(processor: StripeProcessor):
    mapped = parse(processor, event("payout.paid", PAYOUT))

    assert mapped.type is EventType.PAYOUT_PAID
    assert (mapped.amount, mapped.object_id) == (Money(120_000, "USD"), "po_1Surge")
    assert mapped.processor_reference is None


def test_payout_in_zero_decimal_currency(processor: StripeProcessor):
    mapped = parse(processor, event("payout.paid", PAYOUT | {"amount": 98_000, "currency": "jpy"}))

    assert mapped.amount == Money(98_000, "JPY")


def test_other_events_are_ignored(processor: StripeProcessor):
    mapped = parse(processor, event("customer.created", {"id": "cus_1", "object": "customer"}))

    assert (mapped.type, mapped.id) == (EventType.IGNORED, "evt_customer_created")


def test_known_event_with_a_broken_object_is_a_payload_error(processor: StripeProcessor):
    broken = {key: value for key, value in DISPUTE.items() if key != "amount"}

    with pytest.raises(WebhookPayloadError, match=r"charge\.dispute\.created"):
        parse(processor, event("charge.dispute.created", broken))
