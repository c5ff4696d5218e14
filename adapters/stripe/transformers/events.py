"""Events (webhooks and the events API): a verified Stripe event translated to a
:class:`~adapters.base.ProcessorEvent`, one translation per event type Surge acts on; the rest are IGNORED.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from adapters.base import EventType, ProcessorEvent, RefundStatus, WebhookPayloadError
from adapters.stripe.transformers.amounts import from_stripe_amount
from adapters.stripe.transformers.balance_transactions import balance_transaction_fee
from adapters.stripe.transformers.charges import charge_fee, charge_updated_fields, payment_intent_amount
from adapters.stripe.transformers.objects import donation_id_of, id_of, list_data
from adapters.stripe.transformers.refunds import refund_status_of, surge_refund_id_of
from ledger.money import Money


def processor_event_from_stripe_event(event: Mapping[str, Any]) -> ProcessorEvent:
    """Translate a verified Stripe event. Raises WebhookPayloadError when its envelope is not an event."""
    event_id, event_type, created = event.get("id"), event.get("type"), event.get("created")
    data = event.get("data")
    if not isinstance(data, Mapping):
        data = {}
    obj = data.get("object")
    if not isinstance(event_id, str) or not isinstance(event_type, str) or not isinstance(created, int):
        raise WebhookPayloadError("not a Stripe event: id, type and created are required")
    if not isinstance(obj, Mapping):
        raise WebhookPayloadError(f"event {event_id} has no data.object")
    translate = _EVENT_TRANSLATIONS.get(event_type)
    try:
        fields: dict[str, Any] = translate(obj, data) if translate else {"type": EventType.IGNORED}
    except (KeyError, TypeError, ValueError) as error:
        raise WebhookPayloadError(f"event {event_id} ({event_type}) cannot be read: {error!r}") from error
    return ProcessorEvent(id=event_id, created=datetime.fromtimestamp(created, UTC), raw=event, **fields)


def _payment_intent_succeeded(intent: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": EventType.CHARGE_SUCCEEDED,
        "processor_reference": intent["id"],
        "donation_id": donation_id_of(intent),
        "amount": payment_intent_amount(intent),
        "fee": charge_fee(intent),
    }


def _payment_intent_failed(intent: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    error = intent.get("last_payment_error") or {}
    return {
        "type": EventType.CHARGE_FAILED,
        "processor_reference": intent["id"],
        "donation_id": donation_id_of(intent),
        "amount": payment_intent_amount(intent),
        "decline_code": error.get("decline_code") or error.get("code"),
    }


def _charge_refunded(charge: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """Since API 2022-11-15 the charge's refunds are not embedded: then the event names no refund (object_id None)
    and carries the charge's cumulative ``amount_refunded``, which lets the engine book only what no refund it
    knows of explains. Embedded refunds (older versions, expanded objects) name the newest one."""
    refunds = list_data(charge.get("refunds"))
    newest = max(refunds, key=lambda refund: refund.get("created", 0), default=None)
    total = charge.get("amount_refunded")
    return {
        "type": EventType.CHARGE_REFUNDED,
        "processor_reference": id_of(charge.get("payment_intent")) or charge["id"],
        "donation_id": donation_id_of(charge),
        "amount": _refunded_amount(charge, data, newest),
        "object_id": newest.get("id") if newest else None,
        "refund_status": refund_status_of(newest) if newest else None,
        "refund_id": surge_refund_id_of(newest) if newest else None,
        "amount_refunded": from_stripe_amount(total, charge["currency"]) if isinstance(total, int) else None,
    }


def _refund_event(refund: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """refund.created / refund.updated / charge.refund.updated: one Refund object, in its current state."""
    if refund.get("object") != "refund":
        raise ValueError(f"expected a refund, got {refund.get('object')!r}")
    return {
        "type": EventType.REFUND_UPDATED,
        "processor_reference": id_of(refund.get("payment_intent")) or id_of(refund.get("charge")),
        "donation_id": donation_id_of(refund),
        "amount": from_stripe_amount(refund["amount"], refund["currency"]),
        "object_id": refund["id"],
        "refund_status": refund_status_of(refund),
        "refund_id": surge_refund_id_of(refund),
    }


def _refund_failed(refund: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    # Stripe sends refund.failed when a refund fails (its status is then failed): failed, whatever else it says.
    return {**_refund_event(refund, data), "refund_status": RefundStatus.FAILED}


def _refunded_amount(
    charge: Mapping[str, Any], data: Mapping[str, Any], newest: Mapping[str, Any] | None
) -> Money | None:
    """This event's refund: the growth of ``amount_refunded`` when ``previous_attributes`` shows it, else the newest
    embedded refund; None when neither is present (cumulative ``amount_refunded`` is not this event's amount)."""
    previous = data.get("previous_attributes")
    total = charge.get("amount_refunded")
    if isinstance(previous, Mapping) and isinstance(previous.get("amount_refunded"), int) and isinstance(total, int):
        return from_stripe_amount(total - previous["amount_refunded"], charge["currency"])
    if newest is not None and isinstance(newest.get("amount"), int):
        return from_stripe_amount(newest["amount"], newest.get("currency") or charge["currency"])
    return None


def _dispute_created(dispute: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    if _is_inquiry(dispute):
        return {"type": EventType.IGNORED, "object_id": dispute["id"]}
    return {"type": EventType.DISPUTE_CREATED, **_dispute_fields(dispute), "fee": _dispute_fee(dispute)}


def _dispute_closed(dispute: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    outcome = {"won": EventType.DISPUTE_WON, "lost": EventType.DISPUTE_LOST}.get(dispute.get("status", ""))
    if outcome is None or _is_inquiry(dispute):
        return {"type": EventType.IGNORED, "object_id": dispute["id"]}
    return {"type": outcome, **_dispute_fields(dispute)}


def _is_inquiry(dispute: Mapping[str, Any]) -> bool:
    # Inquiries (retrievals) are statuses warning_*: no funds move, so the ledger has nothing to do.
    return str(dispute.get("status", "")).startswith("warning_")


def _dispute_fields(dispute: Mapping[str, Any]) -> dict[str, Any]:
    charge = dispute.get("charge")
    reference = id_of(dispute.get("payment_intent"))
    if reference is None and isinstance(charge, Mapping):
        reference = id_of(charge.get("payment_intent"))
    donation_id = donation_id_of(dispute) or (donation_id_of(charge) if isinstance(charge, Mapping) else None)
    return {
        "processor_reference": reference,
        "donation_id": donation_id,
        "amount": from_stripe_amount(dispute["amount"], dispute["currency"]),
        "object_id": dispute["id"],
    }


def _dispute_fee(dispute: Mapping[str, Any]) -> Money | None:
    fees = [balance_transaction_fee(item) for item in dispute.get("balance_transactions") or []]
    known = [fee for fee in fees if fee is not None]
    if not known:
        return None
    total = known[0]
    for fee in known[1:]:
        total = total + fee
    return total


def _payout_paid(payout: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": EventType.PAYOUT_PAID,
        "amount": from_stripe_amount(payout["amount"], payout["currency"]),
        "object_id": payout["id"],
    }


_EVENT_TRANSLATIONS = {
    "payment_intent.succeeded": _payment_intent_succeeded,
    "payment_intent.payment_failed": _payment_intent_failed,
    "charge.refunded": _charge_refunded,
    "charge.updated": lambda charge, data: charge_updated_fields(charge),
    "refund.created": _refund_event,
    "refund.updated": _refund_event,
    "refund.failed": _refund_failed,
    "charge.refund.updated": _refund_event,
    "charge.dispute.created": _dispute_created,
    "charge.dispute.closed": _dispute_closed,
    "payout.paid": _payout_paid,
}
