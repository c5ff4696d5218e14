"""Adjustments: the legs proposed for an exception, and the adjusting entry that resolves it (who, when, why)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from engine.finance.reconcile.model import SUBJECT_METADATA_KEY, Discrepancy, ExceptionKind, Window, json_object
from ledger.accounts import AccountDirectory
from ledger.entries import EntryKind, EntryOutcome, EntryRequest, Leg
from ledger.posting import post_entries


class AdjustmentUnavailableError(ValueError):
    """No adjustment can be proposed for this exception: the caller must give the legs."""


def correction(discrepancy: Discrepancy) -> tuple[int, int]:
    """(Δgross, Δfee) that make the ledger's side of the subject the processor's, in the kind's own terms.

    An amount mismatch corrects the gross and a fee mismatch the fee: a subject wrong in both has one exception of
    each kind, and each must correct only its own part, or the fee would be corrected twice. A missing side is
    corrected in full."""
    gross = (discrepancy.processor_gross or 0) - (discrepancy.ledger_gross or 0)
    fee = (discrepancy.processor_fee or 0) - (discrepancy.ledger_fee or 0)
    if discrepancy.kind is ExceptionKind.FEE_MISMATCH:
        return 0, fee
    if discrepancy.kind is ExceptionKind.AMOUNT_MISMATCH:
        return gross, 0
    return gross, fee


def proposed_legs(
    discrepancy: Discrepancy, *, clearing_account: str, fees_account: str, counter_account: str | None
) -> tuple[Leg, ...]:
    """The legs that make the ledger's clearing and fee for the subject equal to the processor's."""
    if discrepancy.kind in (ExceptionKind.CURRENCY_MISMATCH, ExceptionKind.PAYOUT_BALANCE_MISMATCH):
        raise AdjustmentUnavailableError(f"a {discrepancy.kind.value} needs an adjustment written by hand")
    if discrepancy.currency is None:
        raise AdjustmentUnavailableError("the exception spans several currencies")
    gross, fee = correction(discrepancy)
    if gross and counter_account is None:
        raise AdjustmentUnavailableError(f"no account is known to balance {discrepancy.subject}")
    amounts = [(clearing_account, gross - fee), (fees_account, fee), (counter_account or "", -gross)]
    legs = tuple(Leg(account, amount, discrepancy.currency) for account, amount in amounts if amount)
    if not legs:
        raise AdjustmentUnavailableError("the exception has no difference to adjust")
    return legs


class ExceptionNotFoundError(LookupError):
    pass


class ExceptionNotOpenError(ValueError):
    """The exception cannot be resolved any more: correcting it now would correct the books twice."""

    code = "exception_not_open"


class AlreadyResolvedError(ExceptionNotOpenError):
    code = "exception_already_resolved"

    def __init__(self, adjustment_id: int) -> None:
        super().__init__(f"resolved already by adjustment {adjustment_id}")
        self.adjustment_id = adjustment_id


class ExceptionClearedError(ExceptionNotOpenError):
    """A later run over its time found the subject matched: the books agree without an adjustment."""

    code = "exception_cleared"

    def __init__(self, run_id: int) -> None:
        super().__init__(f"cleared by reconciliation #{run_id}, which found the ledger agreeing with the processor")
        self.run_id = run_id


class AdjustmentNoLongerAppliesError(ExceptionNotOpenError):
    """Since the run, the ledger moved so that it now agrees with the processor on the exception's subject."""

    code = "exception_no_longer_applies"


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


@dataclass(frozen=True, slots=True)
class OpenException:
    """An exception locked for resolving, with the window of the last run that found it."""

    id: int
    processor: str
    kind: ExceptionKind
    subject: str
    currency: str | None
    occurred_at: datetime
    detail: dict[str, Any]
    window: Window


async def lock_processor(connection: asyncpg.Connection, processor: str) -> None:
    """Serialise, until the transaction ends, the runs and resolutions of one processor's reconciliation.

    A run reads the ledger, then the processor, then records what it found; a resolution reads the ledger and
    posts to it. Interleaved, a run could record as open an exception resolved meanwhile, or two runs record their
    findings in the opposite order to the books they read."""
    await connection.execute(
        "SELECT pg_advisory_xact_lock(hashtext('surge.finance.reconciliation'), hashtext($1))", processor
    )


async def lock_open_exception(connection: asyncpg.Connection, exception_id: int) -> OpenException:
    """Inside a transaction: lock the exception (and its processor's reconciliation), and refuse unless it is open."""
    if not connection.is_in_transaction():
        raise RuntimeError("lock_open_exception must run inside a transaction")
    processor = await connection.fetchval(
        "SELECT processor FROM finance.reconciliation_exceptions WHERE id = $1", exception_id
    )
    if processor is None:
        raise ExceptionNotFoundError(exception_id)
    await lock_processor(connection, processor)
    # Read after the lock: this statement's snapshot sees every resolution and run that finished before it.
    row = await connection.fetchrow(
        """SELECT x.id, x.processor, x.subject, x.kind, x.currency, x.occurred_at, x.detail::text AS detail,
                  x.cleared_run_id, a.id AS adjustment_id, r.window_from, r.window_to, r.slack_s
             FROM finance.reconciliation_exceptions x
             JOIN finance.reconciliation_runs r ON r.id = x.last_run_id
             LEFT JOIN finance.reconciliation_adjustments a ON a.exception_id = x.id
            WHERE x.id = $1 FOR UPDATE OF x""",
        exception_id,
    )
    if row is None:
        raise ExceptionNotFoundError(exception_id)
    if row["adjustment_id"] is not None:
        raise AlreadyResolvedError(row["adjustment_id"])
    if row["cleared_run_id"] is not None:
        raise ExceptionClearedError(row["cleared_run_id"])
    return OpenException(
        row["id"],
        row["processor"],
        ExceptionKind(row["kind"]),
        row["subject"],
        row["currency"].strip() if row["currency"] else None,
        row["occurred_at"],
        json_object(row["detail"]),
        Window(row["window_from"], row["window_to"], timedelta(seconds=row["slack_s"])),
    )


async def post_adjustment(
    connection: asyncpg.Connection,
    directory: AccountDirectory,
    exception: OpenException,
    legs: Iterable[Leg],
    *,
    memo: str,
    resolved_by: str,
) -> Adjustment:
    """Post the adjusting entry for a locked open exception and record who resolved it, when and why.

    The entry takes effect at the exception's time (recorded now: ``recorded_at``), so reports and later runs over
    that time see the books as corrected."""
    memo = memo.strip()
    if not memo:
        raise ValueError("an adjustment needs a memo saying why")
    # A balance-level adjustment lands just before the payout it explains, so that payout's check counts it.
    balance_level = exception.kind is ExceptionKind.PAYOUT_BALANCE_MISMATCH
    effective_at = exception.occurred_at - (timedelta(microseconds=1) if balance_level else timedelta(0))
    metadata: dict[str, Any] = {
        SUBJECT_METADATA_KEY: exception.subject,
        "reconciliation_exception": exception.id,
        "resolved_by": resolved_by,
    }
    donation = exception.detail.get("donation")
    if donation:
        metadata["donation"] = donation
    reference = adjustment_reference(exception.processor, exception.id)
    request = EntryRequest(
        reference, EntryKind.TRANSFER, tuple(legs), effective_at=effective_at, memo=memo, metadata=metadata
    )
    [posted] = await post_entries(connection, directory, [request])
    if posted.outcome is not EntryOutcome.CREATED or posted.entry_id is None:
        raise AdjustmentRefusedError(posted.outcome)
    adjustment = await connection.fetchrow(
        """INSERT INTO finance.reconciliation_adjustments (exception_id, entry_id, resolved_by, memo)
           VALUES ($1, $2, $3, $4) RETURNING id, resolved_at""",
        exception.id,
        posted.entry_id,
        resolved_by,
        memo,
    )
    return Adjustment(
        adjustment["id"], exception.id, posted.entry_id, reference, resolved_by, adjustment["resolved_at"], memo
    )
