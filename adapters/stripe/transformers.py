"""Translation between Stripe's wire format and the adapter types: amounts, PaymentIntents, Refunds, Events,
balance transactions and errors. Pure functions over JSON-shaped mappings (``StripeObject.to_dict()`` or a parsed
webhook body), so one translation serves API responses and webhooks alike.

Amounts. :class:`~ledger.money.Money` counts ISO 4217 minor units; Stripe counts "the smallest currency unit" by
its own table, which agrees for almost every currency: cents for USD, yen for JPY (ISO exponent 0, Stripe zero-
decimal), fils for BHD (exponent 3). Where they differ the amount is scaled here and nowhere else:

- ISK: ISO exponent 0, but Stripe takes two decimals for backwards compatibility: 500 krónur is 50000 at Stripe.
- MGA: ISO exponent 2, Stripe zero-decimal: Money(12300, "MGA") (123.00 ariary) is 123 at Stripe.

An amount that cannot be expressed on the other side (1.50 ariary) raises :class:`UnrepresentableAmountError`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import aiohttp
import stripe

from adapters.base import (
    BalanceTransaction,
    BalanceTransactionType,
    ChargeResult,
    ChargeStatus,
    EventType,
    ProcessorEvent,
    RefundResult,
    RefundStatus,
    WebhookPayloadError,
)
from ledger.currencies import minor_unit_exponent
from ledger.money import Money

logger = logging.getLogger(__name__)

# Stripe's zero-decimal currencies (docs.stripe.com/currencies#zero-decimal).
STRIPE_ZERO_DECIMAL_CURRENCIES = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"}
)
# Stripe's three-decimal currencies; Stripe requires the last digit to be 0, and says so in its own error.
STRIPE_THREE_DECIMAL_CURRENCIES = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})


class UnrepresentableAmountError(ValueError):
    """The amount has no exact equivalent in the other side's units."""


def stripe_exponent(currency: str) -> int:
    if currency in STRIPE_ZERO_DECIMAL_CURRENCIES:
        return 0
    if currency in STRIPE_THREE_DECIMAL_CURRENCIES:
        return 3
    return 2


def to_stripe_amount(money: Money) -> tuple[int, str]:
    """``(amount, currency)`` as Stripe's API takes them: its smallest unit and a lower-case code."""
    shift = stripe_exponent(money.currency) - minor_unit_exponent(money.currency)
    return _scale(money.amount_minor, shift, money.currency), money.currency.lower()


def from_stripe_amount(amount: int, currency: str) -> Money:
    code = currency.upper()
    if type(amount) is not int:
        raise UnrepresentableAmountError(f"Stripe amount must be an integer, got {amount!r} {code}")
    shift = minor_unit_exponent(code) - stripe_exponent(code)
    return Money(_scale(amount, shift, code), code)


def _scale(amount: int, shift: int, currency: str) -> int:
    if shift >= 0:
        return amount * 10**shift
    divisor = 10**-shift
    if amount % divisor:
        raise UnrepresentableAmountError(f"{amount} {currency} is not a whole multiple of {divisor} in the target unit")
    return amount // divisor


# --- errors ------------------------------------------------------------------------------------------------------


class ErrorKind(StrEnum):
    DECLINED = "declined"  # the card said no
    FAILED = "failed"  # definitely not done: invalid request, bad configuration
    RETRYABLE = "retryable"  # definitely not done, try later with the same key
    UNKNOWN = "unknown"  # may or may not have been done


@dataclass(frozen=True, slots=True)
class ClassifiedError:
    kind: ErrorKind
    message: str
    code: str | None = None  # decline code for DECLINED, Stripe's error code otherwise
    processor_reference: str | None = None  # the PaymentIntent a decline left behind, when Stripe names it


def classify_error(error: BaseException) -> ClassifiedError:
    """What a failed call means for the money. Anything not known to be harmless is UNKNOWN."""
    body = _error_body(error)
    if isinstance(error, stripe.CardError):
        code = body.get("decline_code") or error.code or "card_declined"
        reference = _id_of(body.get("payment_intent"))
        return ClassifiedError(ErrorKind.DECLINED, _message(error, "card declined"), code, reference)
    if isinstance(error, stripe.RateLimitError):
        return ClassifiedError(ErrorKind.RETRYABLE, "Stripe rate-limited the request (429); nothing was processed")
    if isinstance(error, stripe.IdempotencyError):
        return ClassifiedError(
            ErrorKind.UNKNOWN,
            "Stripe refused the idempotency key (reused with different parameters): an earlier request with this "
            f"key may have been processed; resolve with lookup ({_message(error, 'idempotency error')})",
            "idempotency_error",
        )
    if isinstance(error, stripe.InvalidRequestError):
        code = error.code or ("resource_missing" if error.http_status == 404 else None)
        parameter = f" (parameter {error.param})" if getattr(error, "param", None) else ""
        return ClassifiedError(ErrorKind.FAILED, _message(error, "invalid request") + parameter, code)
    if isinstance(error, stripe.AuthenticationError):
        return ClassifiedError(
            ErrorKind.FAILED,
            f"Stripe rejected the API key: check STRIPE_SECRET_KEY ({_message(error, 'authentication failed')})",
            "authentication_error",
        )
    if isinstance(error, stripe.PermissionError):
        return ClassifiedError(
            ErrorKind.FAILED,
            "the API key in STRIPE_SECRET_KEY lacks permission for this request (restricted key?): "
            + _message(error, "permission denied"),
            "permission_error",
        )
    if isinstance(error, stripe.APIConnectionError | TimeoutError | aiohttp.ClientError):
        # The request may have reached Stripe before the connection failed or the timeout struck.
        return ClassifiedError(
            ErrorKind.UNKNOWN, f"no answer from Stripe ({type(error).__name__}); the request may have been processed"
        )
    if isinstance(error, stripe.APIError):
        status = error.http_status
        if status is not None and 400 <= status < 500 and status != 409:
            return ClassifiedError(ErrorKind.FAILED, f"Stripe answered {status}: {_message(error, 'error')}")
        return ClassifiedError(
            ErrorKind.UNKNOWN, f"Stripe error {status}: {_message(error, 'server error')}; resolve with lookup"
        )
    return ClassifiedError(ErrorKind.UNKNOWN, f"unexpected {type(error).__name__}: {error}")


def charge_result_from_error(error: BaseException) -> ChargeResult:
    classified = classify_error(error)
    status = {
        ErrorKind.DECLINED: ChargeStatus.DECLINED,
        ErrorKind.FAILED: ChargeStatus.FAILED,
        ErrorKind.RETRYABLE: ChargeStatus.RETRYABLE,
        ErrorKind.UNKNOWN: ChargeStatus.UNKNOWN,
    }[classified.kind]
    decline_code = classified.code if classified.kind is ErrorKind.DECLINED else None
    return ChargeResult(
        status,
        processor_reference=classified.processor_reference,
        decline_code=decline_code,
        message=classified.message,
    )


def refund_result_from_error(error: BaseException) -> RefundResult:
    classified = classify_error(error)
    status = {
        ErrorKind.DECLINED: RefundStatus.FAILED,
        ErrorKind.FAILED: RefundStatus.FAILED,
        ErrorKind.RETRYABLE: RefundStatus.RETRYABLE,
        ErrorKind.UNKNOWN: RefundStatus.UNKNOWN,
    }[classified.kind]
    return RefundResult(status, message=classified.message)


def _error_body(error: BaseException) -> Mapping[str, Any]:
    body = getattr(error, "json_body", None)
    inner = body.get("error") if isinstance(body, dict) else None
    return inner if isinstance(inner, dict) else {}


def _message(error: BaseException, fallback: str) -> str:
    return getattr(error, "user_message", None) or fallback


# --- PaymentIntents and refunds ----------------------------------------------------------------------------------

_PENDING_MESSAGES = {
    "requires_action": "the donor must complete authentication (3-D Secure); a webhook or lookup settles it",
    "processing": "Stripe is processing the payment; a webhook or lookup settles it",
    "requires_capture": "authorised but not captured yet",
}


def charge_result_from_payment_intent(intent: Mapping[str, Any]) -> ChargeResult:
    status = intent.get("status")
    reference = intent.get("id")
    amount = _payment_intent_amount(intent)
    if status == "succeeded":
        return ChargeResult(ChargeStatus.SUCCEEDED, reference, amount, fee=charge_fee(intent))
    if status in _PENDING_MESSAGES:
        return ChargeResult(ChargeStatus.PENDING, reference, amount, message=_PENDING_MESSAGES[status])
    if status == "requires_payment_method":
        error = intent.get("last_payment_error") or {}
        if error:
            code = error.get("decline_code") or error.get("code") or "card_declined"
            message = error.get("message") or "the payment was declined"
            return ChargeResult(ChargeStatus.DECLINED, reference, amount, decline_code=code, message=message)
        return ChargeResult(ChargeStatus.FAILED, reference, amount, message="no usable payment method; not charged")
    if status == "requires_confirmation":
        return ChargeResult(ChargeStatus.FAILED, reference, amount, message="created but never confirmed; not charged")
    if status == "canceled":
        reason = intent.get("cancellation_reason") or "canceled"
        return ChargeResult(ChargeStatus.FAILED, reference, amount, message=f"canceled ({reason}); not charged")
    return ChargeResult(
        ChargeStatus.UNKNOWN, reference, amount, message=f"unrecognised PaymentIntent status {status!r}"
    )


def _payment_intent_amount(intent: Mapping[str, Any]) -> Money | None:
    currency = intent.get("currency")
    amount = intent.get("amount_received") or intent.get("amount")
    if not isinstance(currency, str) or not isinstance(amount, int):
        return None
    return from_stripe_amount(amount, currency)


def charge_fee(intent: Mapping[str, Any]) -> Money | None:
    """The fee from ``latest_charge.balance_transaction`` when both are expanded objects, else None."""
    charge = intent.get("latest_charge")
    transaction = charge.get("balance_transaction") if isinstance(charge, Mapping) else None
    return balance_transaction_fee(transaction) if isinstance(transaction, Mapping) else None


def balance_transaction_fee(transaction: Mapping[str, Any]) -> Money | None:
    # In the balance's (settlement) currency, which may differ from the charge's.
    fee, currency = transaction.get("fee"), transaction.get("currency")
    if not isinstance(fee, int) or not isinstance(currency, str):
        return None
    return from_stripe_amount(fee, currency)


def unexpanded_balance_transaction(intent: Mapping[str, Any]) -> str | None:
    """The id of the charge's balance transaction when the response names it without expanding it."""
    charge = intent.get("latest_charge")
    if isinstance(charge, Mapping):
        transaction = charge.get("balance_transaction")
        return transaction if isinstance(transaction, str) else None
    return None


def refund_result_from_refund(refund: Mapping[str, Any]) -> RefundResult:
    status = refund.get("status")
    reference = refund.get("id")
    if status == "succeeded":
        return RefundResult(RefundStatus.SUCCEEDED, reference)
    if status in ("pending", "requires_action"):
        return RefundResult(RefundStatus.PENDING, reference, message=f"refund {status}; a webhook settles it")
    if status in ("failed", "canceled"):
        reason = refund.get("failure_reason") or status
        return RefundResult(RefundStatus.FAILED, reference, message=f"refund {status} ({reason})")
    return RefundResult(RefundStatus.UNKNOWN, reference, message=f"unrecognised refund status {status!r}")


_STATUS_PREFERENCE = ("succeeded", "processing", "requires_capture", "requires_action")


def most_advanced(intents: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """Of several PaymentIntents for one key (there should be one), the one furthest towards money taken."""

    def rank(intent: Mapping[str, Any]) -> int:
        status = intent.get("status")
        return _STATUS_PREFERENCE.index(status) if status in _STATUS_PREFERENCE else len(_STATUS_PREFERENCE)

    return min(intents, key=rank, default=None)


# --- events --------------------------------------------------------------------------------------------------------


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
        "amount": _payment_intent_amount(intent),
        "fee": charge_fee(intent),
    }


def _payment_intent_failed(intent: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    error = intent.get("last_payment_error") or {}
    return {
        "type": EventType.CHARGE_FAILED,
        "processor_reference": intent["id"],
        "donation_id": donation_id_of(intent),
        "amount": _payment_intent_amount(intent),
        "decline_code": error.get("decline_code") or error.get("code"),
    }


def _charge_refunded(charge: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    refunds = _list_data(charge.get("refunds"))
    newest = max(refunds, key=lambda refund: refund.get("created", 0), default=None)
    return {
        "type": EventType.CHARGE_REFUNDED,
        "processor_reference": _id_of(charge.get("payment_intent")) or charge["id"],
        "donation_id": donation_id_of(charge),
        "amount": _refunded_amount(charge, data, newest),
        "object_id": newest.get("id") if newest else None,
    }


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
    reference = _id_of(dispute.get("payment_intent"))
    if reference is None and isinstance(charge, Mapping):
        reference = _id_of(charge.get("payment_intent"))
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
    "charge.dispute.created": _dispute_created,
    "charge.dispute.closed": _dispute_closed,
    "payout.paid": _payout_paid,
}


# --- balance transactions --------------------------------------------------------------------------------------

_REPORTING_CATEGORIES = {
    "charge": BalanceTransactionType.CHARGE,
    "refund": BalanceTransactionType.REFUND,
    "refund_failure": BalanceTransactionType.REFUND,
    "dispute": BalanceTransactionType.DISPUTE,
    "dispute_reversal": BalanceTransactionType.DISPUTE,
    "payout": BalanceTransactionType.PAYOUT,
    "payout_reversal": BalanceTransactionType.PAYOUT,
    "fee": BalanceTransactionType.FEE,
}
_TYPES = {
    "charge": BalanceTransactionType.CHARGE,
    "payment": BalanceTransactionType.CHARGE,
    "refund": BalanceTransactionType.REFUND,
    "payment_refund": BalanceTransactionType.REFUND,
    "refund_failure": BalanceTransactionType.REFUND,
    "payment_failure_refund": BalanceTransactionType.REFUND,
    "payout": BalanceTransactionType.PAYOUT,
    "payout_cancel": BalanceTransactionType.PAYOUT,
    "payout_failure": BalanceTransactionType.PAYOUT,
    "stripe_fee": BalanceTransactionType.FEE,
    "stripe_fx_fee": BalanceTransactionType.FEE,
    "tax_fee": BalanceTransactionType.FEE,
}


def balance_transaction_type(transaction: Mapping[str, Any]) -> BalanceTransactionType:
    category = _REPORTING_CATEGORIES.get(transaction.get("reporting_category", ""))
    if category is not None:
        return category
    source = _id_of(transaction.get("source")) or ""
    if transaction.get("type") == "adjustment" and source.startswith(("dp_", "du_")):
        return BalanceTransactionType.DISPUTE
    return _TYPES.get(transaction.get("type", ""), BalanceTransactionType.OTHER)


def balance_transaction_from_stripe(transaction: Mapping[str, Any], donation_id: str | None) -> BalanceTransaction:
    currency = transaction["currency"]
    return BalanceTransaction(
        id=transaction["id"],
        type=balance_transaction_type(transaction),
        amount=from_stripe_amount(transaction["amount"], currency),
        fee=from_stripe_amount(transaction.get("fee") or 0, currency),
        created=datetime.fromtimestamp(transaction["created"], UTC),
        source_reference=_id_of(transaction.get("source")),
        donation_id=donation_id,
    )


def source_donation_id(transaction: Mapping[str, Any]) -> str | None:
    """The donation id from an expanded source's metadata (Stripe copies a PaymentIntent's metadata to its charge)."""
    source = transaction.get("source")
    return donation_id_of(source) if isinstance(source, Mapping) else None


def source_payment_intent(transaction: Mapping[str, Any]) -> str | None:
    """The PaymentIntent behind an expanded source (charge, refund or dispute), when it names one."""
    source = transaction.get("source")
    if not isinstance(source, Mapping):
        return None
    reference = _id_of(source.get("payment_intent"))
    if reference is None and isinstance(source.get("charge"), Mapping):
        reference = _id_of(source["charge"].get("payment_intent"))
    return reference


# --- helpers ---------------------------------------------------------------------------------------------------


def donation_id_of(obj: Mapping[str, Any]) -> str | None:
    metadata = obj.get("metadata")
    value = metadata.get("donation_id") if isinstance(metadata, Mapping) else None
    return value if isinstance(value, str) and value else None


def _id_of(value: Any) -> str | None:
    """An expandable field's id, whether Stripe sent the id or the expanded object."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def _list_data(value: Any) -> list[Mapping[str, Any]]:
    items = value.get("data") if isinstance(value, Mapping) else value
    return [item for item in items if isinstance(item, Mapping)] if isinstance(items, list) else []
