"""Reconciliation's values: the window, both sides' items, the discrepancies found and the run's totals."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson

from adapters.base import BalanceTransactionType

SUBJECT_METADATA_KEY = "reconciliation_subject"
# Subjects of balance-level adjustments: counted in clearing balances, never matched against a transaction.
BALANCE_SUBJECT_PREFIX = "balance:"


class ExceptionKind(StrEnum):
    MISSING_IN_LEDGER = "missing_in_ledger"
    MISSING_AT_PROCESSOR = "missing_at_processor"
    AMOUNT_MISMATCH = "amount_mismatch"
    CURRENCY_MISMATCH = "currency_mismatch"
    FEE_MISMATCH = "fee_mismatch"
    PAYOUT_BALANCE_MISMATCH = "payout_balance_mismatch"  # a sweep payout is not the ledger's clearing balance


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime
    slack: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("a reconciliation window needs time-zone-aware times")
        if not self.start < self.end:
            raise ValueError(f"the window must start before it ends ({self.start} .. {self.end})")
        if self.slack < timedelta(0):
            raise ValueError("slack cannot be negative")

    @property
    def read_from(self) -> datetime:
        return self.start - self.slack

    @property
    def read_to(self) -> datetime:
        return self.end + self.slack

    def holds(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


@dataclass(frozen=True, slots=True)
class ProcessorItem:
    id: str
    type: BalanceTransactionType
    subject: str
    currency: str
    amount: int  # signed, as the processor's balance moves
    fee: int
    created: datetime
    donation_id: str | None


@dataclass(frozen=True, slots=True)
class LedgerItem:
    """One entry's postings on the processor's clearing and fee accounts, in one currency."""

    entry_id: int
    reference: str
    subject: str
    currency: str
    clearing: int
    fee: int
    effective_at: datetime
    donation_id: str | None


@dataclass(frozen=True, slots=True)
class Discrepancy:
    kind: ExceptionKind
    subject: str
    currency: str | None  # None for a currency mismatch spanning several
    occurred_at: datetime
    processor_gross: int | None = None  # None: the processor has nothing for the subject
    processor_fee: int | None = None
    ledger_gross: int | None = None  # None: the ledger has nothing for the subject
    ledger_fee: int | None = None
    processor_ids: tuple[str, ...] = ()
    ledger_references: tuple[str, ...] = ()
    donation_id: str | None = None
    note: str = ""

    @property
    def processor_amount(self) -> int | None:
        return self.processor_fee if self.kind is ExceptionKind.FEE_MISMATCH else self.processor_gross

    @property
    def ledger_amount(self) -> int | None:
        return self.ledger_fee if self.kind is ExceptionKind.FEE_MISMATCH else self.ledger_gross

    @property
    def difference(self) -> int | None:
        """Processor minus ledger, in the kind's own terms (gross, or fee for a fee mismatch)."""
        if self.processor_amount is None and self.ledger_amount is None:
            return None
        return (self.processor_amount or 0) - (self.ledger_amount or 0)

    @property
    def key(self) -> str:
        """Identity across runs: the same discrepancy found again is the same exception."""
        amounts = (self.processor_gross, self.processor_fee, self.ledger_gross, self.ledger_fee)
        return "|".join(
            [self.kind.value, self.subject, self.currency or "*", *("-" if a is None else str(a) for a in amounts)]
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "subject": self.subject,
            "currency": self.currency,
            "processor_amount": self.processor_amount,
            "ledger_amount": self.ledger_amount,
            "difference": self.difference,
            "processor_gross": self.processor_gross,
            "processor_fee": self.processor_fee,
            "ledger_gross": self.ledger_gross,
            "ledger_fee": self.ledger_fee,
            "processor_ids": list(self.processor_ids),
            "ledger_references": list(self.ledger_references),
            "donation": self.donation_id,
            "note": self.note,
        }


@dataclass(slots=True)
class CurrencyTotals:
    """One currency's totals over the run's subjects: what the processor did and how the ledger's clearing moved."""

    processor_charges: int = 0
    processor_refunds: int = 0
    processor_disputes: int = 0
    processor_payouts: int = 0
    processor_other: int = 0
    processor_fees: int = 0
    ledger_payouts: int = 0
    ledger_clearing_movement: int = 0

    @property
    def processor_net_movement(self) -> int:
        gross = (
            self.processor_charges
            + self.processor_refunds
            + self.processor_disputes
            + self.processor_payouts
            + self.processor_other
        )
        return gross - self.processor_fees

    def as_json(self) -> dict[str, int]:
        return {
            "processor_charges": self.processor_charges,
            "processor_refunds": self.processor_refunds,
            "processor_disputes": self.processor_disputes,
            "processor_payouts": self.processor_payouts,
            "processor_other": self.processor_other,
            "processor_fees": self.processor_fees,
            "processor_net_movement": self.processor_net_movement,
            "ledger_payouts": self.ledger_payouts,
            "ledger_clearing_movement": self.ledger_clearing_movement,
            "payouts_difference": self.processor_payouts - self.ledger_payouts,
            "movement_difference": self.processor_net_movement - self.ledger_clearing_movement,
        }


@dataclass(slots=True)
class Reconciliation:
    window: Window
    matched: list[str] = field(default_factory=list)
    discrepancies: list[Discrepancy] = field(default_factory=list)
    totals: dict[str, CurrencyTotals] = field(default_factory=dict)

    def digest(self) -> bytes:
        content = "\n".join(sorted(self.matched)) + "\n--\n" + "\n".join(sorted(d.key for d in self.discrepancies))
        return hashlib.blake2b(content.encode(), digest_size=16).digest()

    def summary(self) -> dict[str, Any]:
        return {currency: totals.as_json() for currency, totals in sorted(self.totals.items())}


def json_object(text: str | None) -> dict[str, Any]:
    """JSON read as text (``::text``), so that it decodes the same whatever codecs the connection has."""
    value = orjson.loads(text) if text else {}
    if not isinstance(value, dict):
        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
    return value
