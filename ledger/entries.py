"""What callers ask the ledger to post, and what they get back.

A request is data; its outcome is data too. Expected results — a replay, a conflicting replay, an unbalanced entry,
an unknown account — are :class:`EntryOutcome` values (the TigerBeetle way), never exceptions, so that one bad entry
does not fail the batch it was committed in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from ledger.money import Money


class EntryKind(StrEnum):
    TRANSFER = "transfer"
    HOLD = "hold"  # pending postings, later posted or voided
    HOLD_POST = "hold_post"  # releases a hold's pending postings and posts (all or part of) its amount
    HOLD_VOID = "hold_void"  # releases a hold's pending postings
    REVERSAL = "reversal"  # negates the posted postings of an earlier entry


class EntryOutcome(StrEnum):
    CREATED = "created"
    EXISTS = "exists"  # same reference, same content: the original entry is returned
    EXISTS_WITH_DIFFERENT_CONTENT = "exists_with_different_content"
    NO_LEGS = "no_legs"
    ZERO_AMOUNT = "zero_amount"
    UNBALANCED = "unbalanced"
    ACCOUNT_NOT_FOUND = "account_not_found"
    CURRENCY_MISMATCH = "currency_mismatch"
    PARENT_NOT_FOUND = "parent_not_found"
    PARENT_NOT_A_HOLD = "parent_not_a_hold"
    HOLD_ALREADY_RESOLVED = "hold_already_resolved"
    POST_AMOUNT_INVALID = "post_amount_invalid"  # not positive, above the hold, or partial on a multi-leg hold
    NOT_REVERSIBLE = "not_reversible"  # holds, voids and reversals are not reversed
    ALREADY_REVERSED = "already_reversed"

    @property
    def ok(self) -> bool:
        return self in (EntryOutcome.CREATED, EntryOutcome.EXISTS)


@dataclass(frozen=True, slots=True)
class Leg:
    """One side of an entry: a signed amount on an account, positive for a debit and negative for a credit."""

    account: str
    amount_minor: int
    currency: str


@dataclass(frozen=True, slots=True)
class EntryRequest:
    reference: str
    kind: EntryKind
    legs: tuple[Leg, ...] = ()
    parent_reference: str | None = None
    post_amount_minor: int | None = None  # HOLD_POST only: None posts the whole hold
    effective_at: datetime | None = None
    memo: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> bytes:
        """Digest of the money movement (kind, legs, parent, amount) — not of memo or metadata."""
        legs = sorted((leg.account, leg.amount_minor, leg.currency) for leg in self.legs)
        content = (self.kind.value, self.parent_reference, self.post_amount_minor, legs)
        return hashlib.blake2b(orjson.dumps(content), digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class EntryResult:
    reference: str
    outcome: EntryOutcome
    entry_id: int | None = None  # the created entry, or the original one for EXISTS


def transfer(
    reference: str,
    *,
    debit: str,
    credit: str,
    money: Money,
    memo: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    effective_at: datetime | None = None,
) -> EntryRequest:
    """A two-leg entry moving ``money`` from ``credit`` to ``debit``."""
    return EntryRequest(
        reference,
        EntryKind.TRANSFER,
        _two_legs(debit, credit, money),
        memo=memo,
        metadata=metadata or {},
        effective_at=effective_at,
    )


def hold(
    reference: str,
    *,
    debit: str,
    credit: str,
    money: Money,
    memo: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> EntryRequest:
    return EntryRequest(reference, EntryKind.HOLD, _two_legs(debit, credit, money), memo=memo, metadata=metadata or {})


def post_hold(
    reference: str, hold_reference: str, *, amount_minor: int | None = None, memo: str | None = None
) -> EntryRequest:
    return EntryRequest(
        reference, EntryKind.HOLD_POST, parent_reference=hold_reference, post_amount_minor=amount_minor, memo=memo
    )


def void_hold(reference: str, hold_reference: str, *, memo: str | None = None) -> EntryRequest:
    return EntryRequest(reference, EntryKind.HOLD_VOID, parent_reference=hold_reference, memo=memo)


def reverse(reference: str, entry_reference: str, *, memo: str | None = None) -> EntryRequest:
    return EntryRequest(reference, EntryKind.REVERSAL, parent_reference=entry_reference, memo=memo)


def _two_legs(debit: str, credit: str, money: Money) -> tuple[Leg, Leg]:
    return (
        Leg(debit, money.amount_minor, money.currency),
        Leg(credit, -money.amount_minor, money.currency),
    )
