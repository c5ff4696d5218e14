"""PaymentIntents: the charge result they stand for, their amount and fee, and the most advanced of several."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from adapters.base import ChargeResult, ChargeStatus, EventType
from adapters.stripe.transformers.amounts import from_stripe_amount
from adapters.stripe.transformers.balance_transactions import balance_transaction_fee
from adapters.stripe.transformers.objects import donation_id_of, id_of
from ledger.money import Money

_PENDING_MESSAGES = {
    "requires_action": "the donor must complete authentication (3-D Secure); a webhook or lookup settles it",
    "processing": "Stripe is processing the payment; a webhook or lookup settles it",
    "requires_capture": "authorised but not captured yet",
}


def charge_result_from_payment_intent(intent: Mapping[str, Any]) -> ChargeResult:
    status = intent.get("status")
    reference = intent.get("id")
    amount = payment_intent_amount(intent)
    if status == "succeeded":
        brand, last4 = card_details(intent) or (None, None)
        return ChargeResult(
            ChargeStatus.SUCCEEDED, reference, amount, fee=charge_fee(intent), card_brand=brand, card_last4=last4
        )
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


def payment_intent_amount(intent: Mapping[str, Any]) -> Money | None:
    currency = intent.get("currency")
    amount = intent.get("amount_received") or intent.get("amount")
    if not isinstance(currency, str) or not isinstance(amount, int):
        return None
    return from_stripe_amount(amount, currency)


def card_details(intent: Mapping[str, Any]) -> tuple[str, str] | None:
    """(brand, last4) of the card that paid: the charge's ``payment_method_details.card`` when ``latest_charge`` is
    expanded (Stripe), else the expanded ``payment_method``'s ``card`` (localstripe's charges carry no details)."""
    charge = intent.get("latest_charge")
    details = charge.get("payment_method_details") if isinstance(charge, Mapping) else None
    card = details.get("card") if isinstance(details, Mapping) else None
    if not isinstance(card, Mapping):
        method = intent.get("payment_method")
        card = method.get("card") if isinstance(method, Mapping) else None
    if not isinstance(card, Mapping):
        return None
    brand, last4 = card.get("brand"), card.get("last4")
    if not isinstance(brand, str) or not isinstance(last4, str):
        return None
    return brand.lower(), last4


def charge_fee(intent: Mapping[str, Any]) -> Money | None:
    """The fee from ``latest_charge.balance_transaction`` when both are expanded objects, else None."""
    charge = intent.get("latest_charge")
    transaction = charge.get("balance_transaction") if isinstance(charge, Mapping) else None
    return balance_transaction_fee(transaction) if isinstance(transaction, Mapping) else None


def charge_object_fee(charge: Mapping[str, Any]) -> Money | None:
    """A Charge's fee, in its balance transaction's currency, when that transaction is expanded; else None."""
    transaction = charge.get("balance_transaction")
    return balance_transaction_fee(transaction) if isinstance(transaction, Mapping) else None


def charge_updated_fields(charge: Mapping[str, Any]) -> dict[str, Any]:
    """``charge.updated``: acted on only as a late fee, when the charge succeeded and its balance transaction (with
    the fee and the settlement currency) is expanded. Webhooks name it without expanding it; the balance-transaction
    sweep books those fees (engine/payments/fees.py)."""
    fee = charge_object_fee(charge)
    if fee is None or charge.get("status") != "succeeded":
        return {"type": EventType.IGNORED, "object_id": charge.get("id")}
    return {
        "type": EventType.CHARGE_UPDATED,
        "processor_reference": id_of(charge.get("payment_intent")) or charge["id"],
        "donation_id": donation_id_of(charge),
        "fee": fee,
        "object_id": charge["id"],
    }


def unexpanded_balance_transaction(intent: Mapping[str, Any]) -> str | None:
    """The id of the charge's balance transaction when the response names it without expanding it."""
    charge = intent.get("latest_charge")
    if isinstance(charge, Mapping):
        transaction = charge.get("balance_transaction")
        return transaction if isinstance(transaction, str) else None
    return None


_STATUS_PREFERENCE = ("succeeded", "processing", "requires_capture", "requires_action")


def most_advanced(intents: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """Of several PaymentIntents for one key (there should be one), the one furthest towards money taken."""

    def rank(intent: Mapping[str, Any]) -> int:
        status = intent.get("status")
        return _STATUS_PREFERENCE.index(status) if status in _STATUS_PREFERENCE else len(_STATUS_PREFERENCE)

    return min(intents, key=rank, default=None)
