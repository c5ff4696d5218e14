"""Subjects: what a processor transaction or a ledger entry is about, from the engine's reference conventions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.base import BalanceTransaction, BalanceTransactionType
from engine.finance.reconcile.model import SUBJECT_METADATA_KEY, ProcessorItem


def transaction_subject(transaction: BalanceTransaction) -> str:
    kind, source = transaction.type, transaction.source_reference or transaction.id
    if kind is BalanceTransactionType.CHARGE:
        return f"charge:{transaction.donation_id or source}"
    if kind is BalanceTransactionType.REFUND:
        return f"refund:{transaction.donation_id or source}"
    if kind is BalanceTransactionType.DISPUTE:
        return f"dispute:{source}"
    if kind is BalanceTransactionType.PAYOUT:
        return f"payout:{source}"
    return f"other:{transaction.id}"


def processor_item(transaction: BalanceTransaction) -> ProcessorItem:
    if transaction.fee.currency != transaction.amount.currency:
        raise ValueError(f"balance transaction {transaction.id} has its fee in another currency")
    return ProcessorItem(
        transaction.id,
        transaction.type,
        transaction_subject(transaction),
        transaction.amount.currency,
        transaction.amount.amount_minor,
        transaction.fee.amount_minor,
        transaction.created,
        transaction.donation_id,
    )


def entry_subject(processor: str, reference: str, metadata: Mapping[str, Any]) -> str:
    """The subject of a ledger entry, from the engine's reference conventions (see engine/chart_of_accounts.py)."""
    tagged = metadata.get(SUBJECT_METADATA_KEY)
    if isinstance(tagged, str) and tagged:
        return tagged
    for prefix in ("dispute-fee:", "dispute-won:", "dispute:"):
        if reference.startswith(prefix):
            return "dispute:" + reference[len(prefix) :]
    if reference.startswith(f"payout:{processor}:"):
        return "payout:" + reference[len(f"payout:{processor}:") :]
    if reference.startswith("fee:"):
        return "charge:" + reference[len("fee:") :]
    if reference.startswith("don_"):
        return "charge:" + reference
    donation = metadata.get("donation")
    if reference.startswith("re_") and isinstance(donation, str):
        return "refund:" + donation
    return "entry:" + reference
