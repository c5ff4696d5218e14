"""Balance transactions, as reconciliation reads them: their type, amount, fee and the donation behind them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from adapters.base import BalanceTransaction, BalanceTransactionType
from adapters.stripe.transformers.amounts import from_stripe_amount
from adapters.stripe.transformers.objects import donation_id_of, id_of
from ledger.money import Money

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
    source = id_of(transaction.get("source")) or ""
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
        source_reference=id_of(transaction.get("source")),
        donation_id=donation_id,
    )


def balance_transaction_fee(transaction: Mapping[str, Any]) -> Money | None:
    # In the balance's (settlement) currency, which may differ from the charge's.
    fee, currency = transaction.get("fee"), transaction.get("currency")
    if not isinstance(fee, int) or not isinstance(currency, str):
        return None
    return from_stripe_amount(fee, currency)


def source_donation_id(transaction: Mapping[str, Any]) -> str | None:
    """The donation id from an expanded source's metadata (Stripe copies a PaymentIntent's metadata to its charge)."""
    source = transaction.get("source")
    return donation_id_of(source) if isinstance(source, Mapping) else None


def source_payment_intent(transaction: Mapping[str, Any]) -> str | None:
    """The PaymentIntent behind an expanded source (charge, refund or dispute), when it names one."""
    source = transaction.get("source")
    if not isinstance(source, Mapping):
        return None
    reference = id_of(source.get("payment_intent"))
    if reference is None and isinstance(source.get("charge"), Mapping):
        reference = id_of(source["charge"].get("payment_intent"))
    return reference
