"""Adjustments: the legs proposed for an exception, and the adjusting entry that resolves it (who, when, why)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from engine.finance.reconcile.model import SUBJECT_METADATA_KEY, Discrepancy, ExceptionKind, json_object
from ledger.accounts import AccountDirectory
from ledger.entries import EntryKind, EntryOutcome, EntryRequest, Leg
from ledger.posting import post_entries


class AdjustmentUnavailableError(ValueError):
    """No adjustment can be proposed for this exception: the caller must give the legs."""


def proposed_legs(
    discrepancy: Discrepancy, *, clearing_account: str, fees_account: str, counter_account: str | None
) -> tuple[Leg, ...]:
    """The legs that make the ledger's clearing and fee for the subject equal to the processor's."""
    if discrepancy.kind in (ExceptionKind.CURRENCY_MISMATCH, ExceptionKind.PAYOUT_BALANCE_MISMATCH):
        raise AdjustmentUnavailableError(f"a {discrepancy.kind.value} needs an adjustment written by hand")
    if discrepancy.currency is None:
        raise AdjustmentUnavailableError("the exception spans several currencies")
    gross = (discrepancy.processor_gross or 0) - (discrepancy.ledger_gross or 0)
    fee = (discrepancy.processor_fee or 0) - (discrepancy.ledger_fee or 0)
    if gross and counter_account is None:
        raise AdjustmentUnavailableError(f"no account is known to balance {discrepancy.subject}")
    amounts = [(clearing_account, gross - fee), (fees_account, fee), (counter_account or "", -gross)]
    legs = tuple(Leg(account, amount, discrepancy.currency) for account, amount in amounts if amount)
    if not legs:
        raise AdjustmentUnavailableError("the exception has no difference to adjust")
    return legs


class ExceptionNotFoundError(LookupError):
    pass


class AlreadyResolvedError(Exception):
    def __init__(self, adjustment_id: int) -> None:
        super().__init__(f"resolved already by adjustment {adjustment_id}")
        self.adjustment_id = adjustment_id


class AdjustmentRefusedError(ValueError):
    """The ledger refused the adjusting entry (unknown account, unbalanced legs, ...)."""

    def __init__(self, outcome: EntryOutcome) -> None:
        super().__init__(f"the ledger refused the adjusting entry: {outcome.value}")
        self.outcome = outcome


@dataclass(frozen=True, slots=True)
class Adjustment:
    id: int
    exception_id: int
    entry_id: int
    entry_reference: str
    resolved_by: str
    resolved_at: datetime
    memo: str


def adjustment_reference(processor: str, exception_id: int) -> str:
    return f"reconcile:{processor}:{exception_id}"


async def resolve_exception(
    connection: asyncpg.Connection,
    directory: AccountDirectory,
    exception_id: int,
    legs: Iterable[Leg],
    *,
    memo: str,
    resolved_by: str,
) -> Adjustment:
    """Post the adjusting entry for an exception and record who resolved it, when and why — in one transaction.

    The entry takes effect at the exception's time (recorded now: ``recorded_at``), so reports and later runs over
    that time see the books as corrected."""
    memo = memo.strip()
    if not memo:
        raise ValueError("an adjustment needs a memo saying why")
    async with connection.transaction():
        row = await connection.fetchrow(
            """SELECT x.id, x.processor, x.subject, x.kind, x.occurred_at, x.detail::text AS detail,
                      a.id AS adjustment_id
                 FROM finance.reconciliation_exceptions x
                 LEFT JOIN finance.reconciliation_adjustments a ON a.exception_id = x.id
                WHERE x.id = $1 FOR UPDATE OF x""",
            exception_id,
        )
        if row is None:
            raise ExceptionNotFoundError(exception_id)
        if row["adjustment_id"] is not None:
            raise AlreadyResolvedError(row["adjustment_id"])
        # A balance-level adjustment lands just before the payout it explains, so that payout's check counts it.
        balance_level = row["kind"] == ExceptionKind.PAYOUT_BALANCE_MISMATCH.value
        effective_at = row["occurred_at"] - (timedelta(microseconds=1) if balance_level else timedelta(0))
        metadata: dict[str, Any] = {
            SUBJECT_METADATA_KEY: row["subject"],
            "reconciliation_exception": exception_id,
            "resolved_by": resolved_by,
        }
        donation = json_object(row["detail"]).get("donation")
        if donation:
            metadata["donation"] = donation
        reference = adjustment_reference(row["processor"], exception_id)
        request = EntryRequest(
            reference, EntryKind.TRANSFER, tuple(legs), effective_at=effective_at, memo=memo, metadata=metadata
        )
        [posted] = await post_entries(connection, directory, [request])
        if posted.outcome is not EntryOutcome.CREATED or posted.entry_id is None:
            raise AdjustmentRefusedError(posted.outcome)
        adjustment = await connection.fetchrow(
            """INSERT INTO finance.reconciliation_adjustments (exception_id, entry_id, resolved_by, memo)
               VALUES ($1, $2, $3, $4) RETURNING id, resolved_at""",
            exception_id,
            posted.entry_id,
            resolved_by,
            memo,
        )
    return Adjustment(
        adjustment["id"], exception_id, posted.entry_id, reference, resolved_by, adjustment["resolved_at"], memo
    )
