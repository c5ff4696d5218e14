"""The simulator's webhooks: Stripe's signing scheme and Stripe-like event payloads, translated to ProcessorEvents.

Signature header ``Surge-Simulator-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<payload>">``; several
``v1`` entries may be present (secret rotation) and one matching is enough. The timestamp bounds replays: a
signature older (or further in the future) than the tolerance is refused.

Payloads follow Stripe's shape (``{"id", "object": "event", "type", "created", "data": {"object": {...}}}``, amounts
in minor units, lower-case currencies) with the simulator's own flat ``fee`` and ``metadata.donation_id`` fields.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from adapters.base import (
    SURGE_REFUND_ID,
    EventType,
    ProcessorEvent,
    RefundStatus,
    WebhookPayloadError,
    WebhookSignatureError,
    header_value,
)
from ledger.money import Money

SIGNATURE_HEADER = "Surge-Simulator-Signature"

PAYMENT_SUCCEEDED = "payment_intent.succeeded"
PAYMENT_FAILED = "payment_intent.payment_failed"
REFUND_CREATED = "refund.created"
REFUND_UPDATED = "refund.updated"
REFUND_FAILED = "refund.failed"
DISPUTE_CREATED = "charge.dispute.created"
DISPUTE_CLOSED = "charge.dispute.closed"
PAYOUT_PAID = "payout.paid"

_EVENT_TYPES = {
    PAYMENT_SUCCEEDED: EventType.CHARGE_SUCCEEDED,
    PAYMENT_FAILED: EventType.CHARGE_FAILED,
    REFUND_CREATED: EventType.REFUND_UPDATED,
    REFUND_UPDATED: EventType.REFUND_UPDATED,
    REFUND_FAILED: EventType.REFUND_UPDATED,
    DISPUTE_CREATED: EventType.DISPUTE_CREATED,
    PAYOUT_PAID: EventType.PAYOUT_PAID,
}
_DISPUTE_OUTCOMES = {"won": EventType.DISPUTE_WON, "lost": EventType.DISPUTE_LOST}
_REFUND_STATUSES = {
    "succeeded": RefundStatus.SUCCEEDED,
    "pending": RefundStatus.PENDING,
    "failed": RefundStatus.FAILED,
    "canceled": RefundStatus.FAILED,
}


def signature(payload: bytes, secret: str, timestamp_s: int) -> str:
    return hmac.new(secret.encode(), f"{timestamp_s}.".encode() + payload, hashlib.sha256).hexdigest()


def signature_header(payload: bytes, secret: str, timestamp_s: int) -> str:
    return f"t={timestamp_s},v1={signature(payload, secret, timestamp_s)}"


def signed_headers(payload: bytes, secret: str, timestamp_s: int) -> dict[str, str]:
    return {"Content-Type": "application/json", SIGNATURE_HEADER: signature_header(payload, secret, timestamp_s)}


def verify_signature(
    payload: bytes, headers: Mapping[str, str], secret: str, tolerance_s: int, now_epoch_s: float
) -> None:
    """Raise WebhookSignatureError unless ``headers`` carry a valid, fresh signature of ``payload``."""
    header = header_value(headers, SIGNATURE_HEADER)
    if header is None:
        raise WebhookSignatureError(f"no {SIGNATURE_HEADER} header")
    timestamp_s, signatures = _parse_header(header)
    expected = signature(payload, secret, timestamp_s)
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise WebhookSignatureError("no signature matches the payload")
    if abs(now_epoch_s - timestamp_s) > tolerance_s:
        raise WebhookSignatureError(f"signature timestamp {timestamp_s} is outside the {tolerance_s} s tolerance")


def _parse_header(header: str) -> tuple[int, list[str]]:
    timestamps, signatures = [], []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            signatures.append(value)
    if len(timestamps) != 1 or not signatures:
        raise WebhookSignatureError(f"malformed {SIGNATURE_HEADER} header: need one t= and at least one v1=")
    try:
        return int(timestamps[0]), signatures
    except ValueError:
        raise WebhookSignatureError(f"malformed timestamp in {SIGNATURE_HEADER}: {timestamps[0]!r}") from None


def event_payload(event_id: str, event_type: str, created: datetime, data_object: Mapping[str, Any]) -> bytes:
    event = {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created": int(created.timestamp()),
        "data": {"object": data_object},
    }
    return orjson.dumps(event)


def money_fields(money: Money) -> dict[str, Any]:
    return {"amount": money.amount_minor, "currency": money.currency.lower()}


def parse_event(payload: bytes) -> ProcessorEvent:
    """The ProcessorEvent in a verified payload; WebhookPayloadError when it is not a well-formed event."""
    try:
        event = orjson.loads(payload)
        event_type = event["type"]
        data_object = event["data"]["object"]
        return ProcessorEvent(
            id=_text(event["id"]),
            type=_event_type(event_type, data_object),
            created=datetime.fromtimestamp(_integer(event["created"]), UTC),
            processor_reference=data_object.get("payment_intent"),
            donation_id=(data_object.get("metadata") or {}).get("donation_id"),
            amount=_money(data_object, "amount"),
            fee=_money(data_object, "fee"),
            decline_code=(data_object.get("last_payment_error") or {}).get("decline_code"),
            object_id=data_object.get("id"),
            raw=event,
            **_refund_fields(event_type, data_object),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise WebhookPayloadError(f"not a well-formed simulator event: {error}") from error


def _refund_fields(event_type: str, data_object: Mapping[str, Any]) -> dict[str, Any]:
    """A refund event's state and the Surge refund id its metadata carries (None when made elsewhere)."""
    if _EVENT_TYPES.get(event_type) is not EventType.REFUND_UPDATED:
        return {}
    status = RefundStatus.FAILED if event_type == REFUND_FAILED else _REFUND_STATUSES.get(data_object.get("status", ""))
    surge_refund_id = (data_object.get("metadata") or {}).get(SURGE_REFUND_ID)
    return {"refund_status": status, "refund_id": surge_refund_id if isinstance(surge_refund_id, str) else None}


def _event_type(event_type: str, data_object: Mapping[str, Any]) -> EventType:
    if event_type == DISPUTE_CLOSED:
        return _DISPUTE_OUTCOMES.get(data_object["status"], EventType.IGNORED)
    return _EVENT_TYPES.get(event_type, EventType.IGNORED)


def _money(data_object: Mapping[str, Any], name: str) -> Money | None:
    if data_object.get(name) is None:
        return None
    return Money(_integer(data_object[name]), _text(data_object["currency"]).upper())


def _integer(value: object) -> int:
    if type(value) is not int:  # bool is an int subclass and a float is not an amount
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value
