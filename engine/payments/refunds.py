"""Refunds with the donation's discipline: durable before the processor call, then resolved, whatever happens.

1. ``reserve_refund``: one transaction claims the Idempotency-Key, reserves the amount on the donation
   (``refund_reserved_minor``) and records the refund as ``refunding``, leased to this request for the processor
   call's timeout plus a margin. It is committed before anything is sent.
2. ``send_refund``: the processor is asked with an idempotency key derived from the refund id (the same refund
   always sends the same key) and Surge's refund id in the processor refund's metadata (``surge_refund_id``), so a
   refund event can always be told apart from a refund made elsewhere.
3. ``apply_refund_result``: succeeded books the refund (ledger entry, aggregate) and turns the reservation into
   ``refunded_minor`` and writes the donor's refund receipt to the outbox (engine/receipts/); failed releases the
   reservation; pending keeps it until a refund event or a lookup settles
   it; unknown or retryable leave it ``refunding`` for the refund worker (engine/payments/refund_recovery.py).

A crash between any two steps leaves a ``refunding`` or ``pending`` row whose lease expires; the worker of any
engine process then asks the processor (``lookup_refund``) and sends the refund again, with the same key, only when
the processor has none. The reservation makes over-refunds impossible even when refund requests race, and even with
processors that would accept them (localstripe does): the donations table's CHECK keeps refunded + reserved +
disputed within the donation's amount.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg

from adapters.base import Processor, RefundRequest, RefundResult, RefundStatus
from engine import chart_of_accounts
from engine.pipeline.aggregates import remove_contribution
from engine.receipts.outbox import add_refund_receipt
from ledger.accounts import AccountDirectory
from ledger.entries import transfer
from ledger.money import Money
from ledger.posting import post_entries_or_raise

_logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Refund:
    id: str
    donation_id: str
    amount_minor: int
    currency: str
    status: str
    processor_reference: str | None
    failure_message: str | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Refund:
        return cls(**{name: row[name] for name in cls.__slots__})

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "refund",
            "donation": self.donation_id,
            "amount": self.amount_minor,
            "currency": self.currency.lower(),
            # 'refunding' is the engine's own bookkeeping; to clients a refund not yet final is pending.
            "status": "pending" if self.status in UNFINISHED_STATUSES else self.status,
            "processor_reference": self.processor_reference,
            "failure_message": self.failure_message,
            "created": self.created_at.isoformat(),
        }


class RefundRefusal(StrEnum):
    DONATION_MISSING = "donation_missing"
    IDEMPOTENCY_MISMATCH = "idempotency_mismatch"  # the key was used for another donation or amount
    NOT_REFUNDABLE = "not_refundable"  # the donation did not succeed
    AMOUNT_OUT_OF_RANGE = "amount_out_of_range"  # not between 1 and the unrefunded amount


class RefundRefusedError(Exception):
    def __init__(
        self,
        refusal: RefundRefusal,
        donation_id: str,
        *,
        donation_status: str | None = None,
        amount_minor: int | None = None,
        refundable_minor: int | None = None,
    ) -> None:
        super().__init__(f"{refusal.value}: {donation_id}")
        self.refusal = refusal
        self.donation_id = donation_id
        self.donation_status = donation_status
        self.amount_minor = amount_minor
        self.refundable_minor = refundable_minor


_REFUND_COLUMNS = "id, donation_id, amount_minor, currency, status, processor_reference, failure_message, created_at"
UNFINISHED_STATUSES = ("refunding", "pending")
LEASE_MARGIN_S = 2.0  # beyond the processor call's timeout: the time to book its answer
RETRY_DELAY_MAX_S = 600


@dataclass(frozen=True, slots=True)
class RefundClaim:
    """A refund and where it is to be made; ``created`` when this request recorded it (and must send it)."""

    refund: Refund
    processor: str
    charge_reference: str
    created: bool


def lease_seconds(timeout_s: float) -> float:
    return timeout_s + LEASE_MARGIN_S


async def reserve_refund(
    connection: asyncpg.Connection,
    api_key_id: str,
    idempotency_key: str,
    donation_id: str,
    amount_minor: int | None,
    lease_s: float,
) -> RefundClaim:
    """Claim the key, reserve the amount and record the refund ``refunding``, leased for ``lease_s`` seconds to the
    caller, who sends it; a replay returns the refund as it is now (``created`` False).

    Raises :class:`RefundRefusedError` when the refund cannot be made (nothing is changed then).
    """
    async with connection.transaction():
        donation = await connection.fetchrow(
            """SELECT id, status, amount_minor, currency, processor, processor_reference,
                      amount_minor - refunded_minor - refund_reserved_minor - disputed_minor AS refundable
                 FROM surge.donations WHERE id = $1 FOR UPDATE""",
            donation_id,
        )
        # Read under the donation's lock: a concurrent request with the same key has committed its refund by now.
        existing = await connection.fetchrow(
            f"SELECT {_REFUND_COLUMNS} FROM surge.refunds WHERE api_key_id = $1 AND idempotency_key = $2",
            api_key_id,
            idempotency_key,
        )
        if donation is None:
            raise RefundRefusedError(RefundRefusal.DONATION_MISSING, donation_id)
        if existing is not None:
            refund = Refund.from_row(existing)
            if refund.donation_id != donation_id or (amount_minor is not None and amount_minor != refund.amount_minor):
                raise RefundRefusedError(RefundRefusal.IDEMPOTENCY_MISMATCH, donation_id)
            return RefundClaim(refund, donation["processor"], donation["processor_reference"], created=False)
        if donation["status"] != "succeeded":
            raise RefundRefusedError(RefundRefusal.NOT_REFUNDABLE, donation_id, donation_status=donation["status"])
        refundable = donation["refundable"]
        amount = refundable if amount_minor is None else amount_minor
        if amount <= 0 or amount > refundable:
            raise RefundRefusedError(
                RefundRefusal.AMOUNT_OUT_OF_RANGE, donation_id, amount_minor=amount, refundable_minor=refundable
            )
        await connection.execute(
            """UPDATE surge.donations SET refund_reserved_minor = refund_reserved_minor + $2, updated_at = now()
                WHERE id = $1""",
            donation_id,
            amount,
        )
        row = await connection.fetchrow(
            f"""INSERT INTO surge.refunds (id, donation_id, api_key_id, idempotency_key, amount_minor, currency, status,
                                           attempts, next_attempt_at)
                VALUES ($1, $2, $3, $4, $5, $6, 'refunding', 1, now() + make_interval(secs => $7))
             RETURNING {_REFUND_COLUMNS}""",
            "re_" + secrets.token_hex(12),
            donation_id,
            api_key_id,
            idempotency_key,
            amount,
            donation["currency"],
            lease_s,
        )
        return RefundClaim(Refund.from_row(row), donation["processor"], donation["processor_reference"], created=True)


def refund_request(refund: Refund, charge_reference: str) -> RefundRequest:
    """What is sent for ``refund``: always the same key for the same refund, so a resend is deduplicated."""
    return RefundRequest(
        idempotency_key=f"surge-{refund.id}",
        refund_id=refund.id,
        processor_reference=charge_reference,
        amount=Money(refund.amount_minor, refund.currency),
        donation_id=refund.donation_id,
    )


async def send_refund(processor: Processor, refund: Refund, charge_reference: str, timeout_s: float) -> RefundResult:
    request = refund_request(refund, charge_reference)
    try:
        async with asyncio.timeout(timeout_s):
            return await processor.refund(request)
    except TimeoutError:
        return RefundResult(RefundStatus.UNKNOWN, message="the processor did not answer in time")
    except Exception:
        _logger.exception("%s.refund raised; treating the outcome as unknown", processor.name)
        return RefundResult(RefundStatus.UNKNOWN, message="the refund call failed")


async def lookup_refund(processor: Processor, refund: Refund, charge_reference: str, timeout_s: float) -> RefundResult:
    request = refund_request(refund, charge_reference)
    try:
        async with asyncio.timeout(timeout_s):
            return await processor.lookup_refund(request, refund.processor_reference)
    except TimeoutError:
        return RefundResult(RefundStatus.UNKNOWN, message="the processor did not answer the lookup in time")
    except Exception:
        _logger.exception("%s.lookup_refund raised; treating the outcome as unknown", processor.name)
        return RefundResult(RefundStatus.UNKNOWN, message="the refund lookup failed")


async def apply_refund_result(
    connection: asyncpg.Connection, directory: AccountDirectory, refund_id: str, result: RefundResult
) -> Refund:
    """Record what the processor said about an unfinished refund (in one transaction of its own) and return the
    refund as it is then; a final refund is left as it is."""
    async with connection.transaction():
        if result.status in (RefundStatus.SUCCEEDED, RefundStatus.FAILED):
            succeeded = result.status is RefundStatus.SUCCEEDED
            return await finish_refund(
                connection, directory, refund_id, succeeded, result.processor_reference, result.message
            )
        # Pending waits for an event (or the next lookup); unknown, retryable and not-found stay 'refunding' for the
        # worker, which looks up before it sends again. Each is retried later, with a growing delay.
        row = await connection.fetchrow(
            f"""UPDATE surge.refunds
                   SET status = CASE WHEN $2 THEN 'pending' ELSE status END,
                       processor_reference = coalesce(processor_reference, $3),
                       failure_message = $4, updated_at = now(),
                       next_attempt_at = now() + make_interval(secs => least(power(2, attempts), $5))
                 WHERE id = $1 AND status IN ('refunding', 'pending') RETURNING {_REFUND_COLUMNS}""",
            refund_id,
            result.status is RefundStatus.PENDING,
            result.processor_reference,
            result.message,
            RETRY_DELAY_MAX_S,
        )
        if row is None:
            row = await connection.fetchrow(f"SELECT {_REFUND_COLUMNS} FROM surge.refunds WHERE id = $1", refund_id)
        return Refund.from_row(row)


async def finish_refund(
    connection: asyncpg.Connection,
    directory: AccountDirectory,
    refund_id: str,
    succeeded: bool,
    processor_reference: str | None,
    message: str | None = None,
) -> Refund:
    """Book an unfinished refund's final outcome (inside the caller's transaction); a final refund is left as it is.

    Succeeded: the reservation becomes refunded and the refund is booked; failed: the reservation is released."""
    if succeeded and processor_reference is None:
        current_reference = await connection.fetchval(
            "SELECT processor_reference FROM surge.refunds WHERE id = $1", refund_id
        )
        if current_reference is None:
            # Booked refunds carry the processor's refund id: it is what stops a refund event booking it again.
            raise RuntimeError(f"refund {refund_id} succeeded without a processor refund id")
    row = await connection.fetchrow(
        f"""UPDATE surge.refunds SET status = $2, processor_reference = coalesce($3, processor_reference),
                   failure_message = $4, updated_at = now(), settled_at = now()
             WHERE id = $1 AND status IN ('refunding', 'pending') RETURNING {_REFUND_COLUMNS}""",
        refund_id,
        "succeeded" if succeeded else "failed",
        processor_reference,
        message,
    )
    if row is None:
        current = await connection.fetchrow(f"SELECT {_REFUND_COLUMNS} FROM surge.refunds WHERE id = $1", refund_id)
        return Refund.from_row(current)
    refund = Refund.from_row(row)
    donation = await connection.fetchrow(
        """UPDATE surge.donations
              SET refund_reserved_minor = refund_reserved_minor - $2,
                  refunded_minor = refunded_minor + CASE WHEN $3 THEN $2 ELSE 0 END, updated_at = now()
            WHERE id = $1 RETURNING campaign, election, donor_key, processor""",
        refund.donation_id,
        refund.amount_minor,
        succeeded,
    )
    if succeeded:
        await book_refund(connection, directory, refund, donation)
    return refund


async def book_refund(
    connection: asyncpg.Connection, directory: AccountDirectory, refund: Refund, donation: asyncpg.Record
) -> None:
    # A refunded contribution no longer counts toward the donor's limit.
    await remove_contribution(
        connection, donation["campaign"], donation["election"], donation["donor_key"], refund.amount_minor
    )
    entry = transfer(
        refund.id,
        debit=chart_of_accounts.refunds(donation["campaign"]),
        credit=chart_of_accounts.clearing(donation["processor"], refund.currency),
        money=Money(refund.amount_minor, refund.currency),
        memo="refund",
        metadata={"donation": refund.donation_id},
    )
    await post_entries_or_raise(connection, directory, [entry])
    # Every refund booked tells the donor, Surge's own and those made in the processor's dashboard alike: the
    # donor's money came back either way, and the receipt corrects the one they had for the gift.
    await add_refund_receipt(connection, refund.id, refund.donation_id)
