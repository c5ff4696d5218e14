"""Refund events at the engine's Stripe webhook endpoint, in Stripe's shape for the pinned API version (issue 10,
defect 1).

localstripe makes the refunds (through the engine, or directly as a dashboard would) but sends no ``charge.refunded``
or ``refund.*`` events, so those are built here in the shape Stripe's OpenAPI specification documents — a Refund
object with its documented fields; a Charge that, since API 2022-11-15, no longer embeds its ``refunds``; the event
envelope with ``api_version``, ``request`` and ``previous_attributes`` — filled with the ids of the real localstripe
objects, and signed with the Stripe SDK's own signing (``stripe.WebhookSignature``). The SDK parses each event back,
so a payload the SDK could not read would fail here first.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Mapping
from typing import Any

import pytest
import stripe

from adapters.base import EventType, RefundRequest, RefundResult, RefundStatus
from adapters.stripe import StripeProcessor
from engine.api.state import ACCOUNTS
from engine.keys import Role
from engine.payments.refunds import apply_refund_result, reserve_refund
from ledger.money import Money
from tests.e2e.conftest import Surge, donation
from tests.stripe.conftest import WEBHOOK_SECRET
from tests.stripe.test_stripe_adapter import donation as charge_request
from tests.stripe.test_stripe_engine import balance

_event_numbers = itertools.count(1)


def stripe_refund(
    refund_id: str,
    charge_id: str,
    payment_intent: str,
    amount: int,
    *,
    status: str = "succeeded",
    metadata: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A Refund object with the fields Stripe documents (components/schemas/refund)."""
    refund: dict[str, Any] = {
        "id": refund_id,
        "object": "refund",
        "amount": amount,
        "balance_transaction": None if status in ("pending", "failed") else f"txn_{refund_id}",
        "charge": charge_id,
        "created": int(time.time()),
        "currency": "usd",
        "destination_details": {"card": {"type": "refund"}, "type": "card"},
        "metadata": dict(metadata or {}),
        "payment_intent": payment_intent,
        "reason": None,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": status,
        "transfer_reversal": None,
    }
    if status == "failed":
        refund["failure_reason"] = "expired_or_canceled_card"
        refund["failure_balance_transaction"] = f"txn_failure_{refund_id}"
    if status == "pending":
        refund["pending_reason"] = "processing"
    return refund


def stripe_charge(charge_id: str, payment_intent: str, amount: int, amount_refunded: int) -> dict[str, Any]:
    """A Charge as ``charge.refunded`` carries it since API 2022-11-15: ``refunds`` is not included."""
    return {
        "id": charge_id,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": amount_refunded,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": f"txn_{charge_id}",
        "billing_details": {"address": None, "email": None, "name": None, "phone": None},
        "captured": True,
        "created": int(time.time()) - 60,
        "currency": "usd",
        "customer": None,
        "description": None,
        "disputed": False,
        "failure_balance_transaction": None,
        "failure_code": None,
        "failure_message": None,
        "fraud_details": {},
        "livemode": False,
        "metadata": {},
        "on_behalf_of": None,
        "outcome": {"network_status": "approved_by_network", "type": "authorized"},
        "paid": True,
        "payment_intent": payment_intent,
        "payment_method": "pm_card_visa",
        "receipt_email": None,
        "receipt_number": None,
        "receipt_url": None,
        "refunded": amount_refunded == amount,
        "review": None,
        "shipping": None,
        "source_transfer": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "succeeded",
        "transfer_data": None,
        "transfer_group": None,
    }


def stripe_event(
    event_type: str, obj: Mapping[str, Any], previous_attributes: Mapping[str, Any] | None = None
) -> bytes:
    data: dict[str, Any] = {"object": obj}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    envelope = {
        "id": f"evt_surge_{next(_event_numbers)}_{int(time.time() * 1000)}",
        "object": "event",
        "api_version": stripe.api_version,  # the version the SDK (and so the adapter) is pinned to
        "created": int(time.time()),
        "data": data,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }
    body = json.dumps(envelope).encode()
    # The SDK reads it back as an Event: the shape is one Stripe's own library accepts.
    parsed = stripe.Webhook.construct_event(body.decode(), stripe_signature(body), WEBHOOK_SECRET)
    assert parsed.type == event_type and parsed.data.object.id == obj["id"]
    return body


def stripe_signature(body: bytes) -> str:
    return stripe.WebhookSignature.generate_signature_header(body.decode(), WEBHOOK_SECRET)


async def deliver(surge: Surge, body: bytes) -> None:
    response = await surge.client.post(
        "/v1/webhooks/stripe",
        data=body,
        headers={"Stripe-Signature": stripe_signature(body), "Content-Type": "application/json"},
    )
    assert response.status == 200, await response.text()


async def stripe_refunds(client: stripe.StripeClient, payment_intent: str) -> list[dict[str, Any]]:
    listed = await client.v1.refunds.list_async(params={"payment_intent": payment_intent})
    return [item.to_dict() for item in listed.data]


async def refund_rows(surge: Surge, donation_id: str) -> list[tuple[str, int, str | None, str]]:
    rows = await surge.pool.fetch(
        """SELECT status, amount_minor, processor_reference, origin FROM surge.refunds
            WHERE donation_id = $1 ORDER BY created_at""",
        donation_id,
    )
    return [(row["status"], row["amount_minor"], row["processor_reference"], row["origin"]) for row in rows]


async def amounts(surge: Surge, donation_id: str) -> tuple[int, int]:
    row = await surge.pool.fetchrow(
        "SELECT refunded_minor, refund_reserved_minor FROM surge.donations WHERE id = $1", donation_id
    )
    return row["refunded_minor"], row["refund_reserved_minor"]


# --- defect 1: Surge's own partial refund, then Stripe's events about it -------------------------------------------


async def test_a_partial_refund_by_surge_is_booked_once_whatever_stripe_sends_after_it(
    surge_on_stripe: Surge,
    stripe_client: stripe.StripeClient,
) -> None:
    surge = surge_on_stripe
    _, gift = await surge.donate(donation(5_000))
    response = await surge.client.post(
        f"/v1/donations/{gift['id']}/refunds",
        json={"amount": 1_500},
        headers={**surge.auth(Role.FINANCE), "Idempotency-Key": "partial-1"},
    )
    assert response.status == 200, await response.text()
    refund = await response.json()
    [made] = await stripe_refunds(stripe_client, gift["processor_reference"])
    assert made["metadata"]["surge_refund_id"] == refund["id"]  # Surge names its refund at Stripe
    assert made["id"] == refund["processor_reference"]

    # charge.refunded no longer says which refund it is: the refunded total grew from 0 to 1500.
    charge = stripe_charge(made["charge"], gift["processor_reference"], 5_000, amount_refunded=1_500)
    await deliver(surge, stripe_event("charge.refunded", charge, {"amount_refunded": 0, "refunded": False}))
    args = (made["id"], made["charge"], gift["processor_reference"], 1_500)
    await deliver(surge, stripe_event("refund.created", stripe_refund(*args, metadata=made["metadata"])))
    await deliver(surge, stripe_event("refund.updated", stripe_refund(*args, metadata=made["metadata"])))

    assert await balance(surge, "refunds:demo") == 1_500
    assert await refund_rows(surge, gift["id"]) == [("succeeded", 1_500, made["id"], "api")]
    assert await amounts(surge, gift["id"]) == (1_500, 0)


async def test_a_charge_refunded_event_beating_surges_own_refund_books_nothing(
    surge_on_stripe: Surge,
) -> None:
    """The event arrives while Surge's refund is still reserved (its call not yet answered): the reservation
    explains it. The refund event naming Surge's refund then settles that refund, once."""
    surge = surge_on_stripe
    _, gift = await surge.donate(donation(5_000))
    async with surge.pool.acquire() as connection:
        finance = await connection.fetchval("SELECT id FROM surge.api_keys WHERE role = 'finance' LIMIT 1")
        claim = await reserve_refund(connection, finance, "in-flight", gift["id"], 2_000, lease_s=3600)
    pi = gift["processor_reference"]
    charge = stripe_charge("ch_surge_race", pi, 5_000, amount_refunded=2_000)
    await deliver(surge, stripe_event("charge.refunded", charge, {"amount_refunded": 0}))
    assert await balance(surge, "refunds:demo") == 0
    assert await amounts(surge, gift["id"]) == (0, 2_000)

    metadata = {"surge_refund_id": claim.refund.id, "donation_id": gift["id"]}
    await deliver(
        surge, stripe_event("refund.created", stripe_refund("re_race", "ch_surge_race", pi, 2_000, metadata=metadata))
    )
    assert await refund_rows(surge, gift["id"]) == [("succeeded", 2_000, "re_race", "api")]
    assert await amounts(surge, gift["id"]) == (2_000, 0)
    assert await balance(surge, "refunds:demo") == 2_000


# --- refunds made outside Surge (the dashboard) --------------------------------------------------------------------


@pytest.mark.parametrize("charge_event_first", [True, False], ids=["charge-refunded-first", "refund-created-first"])
async def test_a_dashboard_refund_is_booked_once_in_either_order(
    surge_on_stripe: Surge,
    stripe_client: stripe.StripeClient,
    charge_event_first: bool,
) -> None:
    surge = surge_on_stripe
    _, gift = await surge.donate(donation(6_000))
    pi = gift["processor_reference"]
    made = (await stripe_client.v1.refunds.create_async(params={"payment_intent": pi, "amount": 2_500})).to_dict()
    charge_refunded = stripe_event(
        "charge.refunded", stripe_charge(made["charge"], pi, 6_000, amount_refunded=2_500), {"amount_refunded": 0}
    )
    refund_created = stripe_event("refund.created", stripe_refund(made["id"], made["charge"], pi, 2_500))
    for body in (charge_refunded, refund_created) if charge_event_first else (refund_created, charge_refunded):
        await deliver(surge, body)
        assert await balance(surge, "refunds:demo") == 2_500
    await deliver(surge, stripe_event("refund.updated", stripe_refund(made["id"], made["charge"], pi, 2_500)))

    [(status, amount, reference, _)] = await refund_rows(surge, gift["id"])
    assert (status, amount, reference) == ("succeeded", 2_500, made["id"])  # the event's refund id is attached
    assert await amounts(surge, gift["id"]) == (2_500, 0)
    assert await balance(surge, "refunds:demo") == 2_500


# --- pending refunds settled by refund.updated, failed ones released -----------------------------------------------


async def test_pending_refunds_are_settled_by_refund_updated_and_refund_failed_releases_the_reservation(
    surge_on_stripe: Surge,
) -> None:
    surge = surge_on_stripe
    _, gift = await surge.donate(donation(8_000))
    pi = gift["processor_reference"]
    async with surge.pool.acquire() as connection:
        finance = await connection.fetchval("SELECT id FROM surge.api_keys WHERE role = 'finance' LIMIT 1")
        pending = {}
        for name, amount in (("settles", 3_000), ("fails", 1_000)):
            claim = await reserve_refund(connection, finance, name, gift["id"], amount, lease_s=3600)
            # Stripe accepted the refund for later (e.g. a bank transfer): the engine keeps it pending.
            result = RefundResult(RefundStatus.PENDING, f"re_pending_{name}", "refund pending")
            refund = await apply_refund_result(connection, surge.app[ACCOUNTS], claim.refund.id, result)
            assert refund.status == "pending" and refund.as_json()["status"] == "pending"
            pending[name] = claim.refund
    assert await amounts(surge, gift["id"]) == (0, 4_000)

    def metadata(name: str) -> dict[str, str]:
        return {"surge_refund_id": pending[name].id, "donation_id": gift["id"]}

    settles = stripe_refund("re_pending_settles", "ch_x", pi, 3_000, status="pending", metadata=metadata("settles"))
    await deliver(surge, stripe_event("refund.updated", settles | {"status": "succeeded"}, {"status": "pending"}))
    fails = stripe_refund("re_pending_fails", "ch_x", pi, 1_000, status="failed", metadata=metadata("fails"))
    await deliver(surge, stripe_event("refund.failed", fails, {"status": "pending"}))

    rows = await refund_rows(surge, gift["id"])
    assert sorted(rows) == [
        ("failed", 1_000, "re_pending_fails", "api"),
        ("succeeded", 3_000, "re_pending_settles", "api"),
    ]
    assert await amounts(surge, gift["id"]) == (3_000, 0)  # the failed refund's reservation is released
    assert await balance(surge, "refunds:demo") == 3_000
    read = await surge.client.get(f"/v1/donations/{gift['id']}", headers=surge.auth(Role.FINANCE))
    assert (await read.json())["amount_refunded"] == 3_000


# --- the adapter: translation and lookup ---------------------------------------------------------------------------


def test_refund_events_translate_with_their_state_and_surge_refund_id(processor: StripeProcessor) -> None:
    metadata = {"surge_refund_id": "re_surge_1", "donation_id": "don_1"}
    for event_type, status, expected in (
        ("refund.created", "succeeded", RefundStatus.SUCCEEDED),
        ("refund.updated", "pending", RefundStatus.PENDING),
        ("refund.failed", "failed", RefundStatus.FAILED),
        ("charge.refund.updated", "canceled", RefundStatus.FAILED),
    ):
        body = stripe_event(event_type, stripe_refund("re_1", "ch_1", "pi_1", 700, status=status, metadata=metadata))
        mapped = processor.parse_webhook(body, {"Stripe-Signature": stripe_signature(body)})
        assert (mapped.type, mapped.refund_status, mapped.refund_id, mapped.object_id) == (
            EventType.REFUND_UPDATED,
            expected,
            "re_surge_1",
            "re_1",
        )
        assert (mapped.processor_reference, mapped.donation_id, mapped.amount) == ("pi_1", "don_1", Money(700, "USD"))
    body = stripe_event("charge.refunded", stripe_charge("ch_1", "pi_1", 2_000, 900), {"amount_refunded": 200})
    mapped = processor.parse_webhook(body, {"Stripe-Signature": stripe_signature(body)})
    assert (mapped.type, mapped.object_id, mapped.amount, mapped.amount_refunded) == (
        EventType.CHARGE_REFUNDED,
        None,
        Money(700, "USD"),
        Money(900, "USD"),
    )


async def test_lookup_refund_finds_surges_refund_by_its_id_and_nothing_else(processor: StripeProcessor) -> None:
    charged = await processor.charge(charge_request("lookup-refund"))
    assert charged.processor_reference is not None
    request = RefundRequest("surge-re_a", "re_a", charged.processor_reference, Money(900, "USD"), "donation-1")
    assert (await processor.lookup_refund(request, None)).status is RefundStatus.NOT_FOUND
    made = await processor.refund(request)
    assert made.status is RefundStatus.SUCCEEDED
    found = await processor.lookup_refund(request, None)
    assert (found.status, found.processor_reference) == (RefundStatus.SUCCEEDED, made.processor_reference)
    other = RefundRequest("surge-re_b", "re_b", charged.processor_reference, Money(900, "USD"))
    assert (await processor.lookup_refund(other, None)).status is RefundStatus.NOT_FOUND
    by_reference = await processor.lookup_refund(other, made.processor_reference)
    assert by_reference.processor_reference == made.processor_reference
