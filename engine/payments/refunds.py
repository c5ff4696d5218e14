"""Refunds: reserve the amount on the donation, ask the processor, then book it — each step its own transaction.

The reservation (``refund_reserved_minor``) makes over-refunds impossible even when refund requests race, and even
with processors that would accept them (localstripe does): the donations table's CHECK keeps refunded + reserved +
disputed within the donation's amount. A refund whose processor outcome is unknown stays ``pending``; replaying
the request (same Idempotency-Key) asks the processor again with the same processor idempotency key.
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
            "status": self.status,
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


async def reserve_refund(
    connection: asyncpg.Connection, api_key_id: str, idempotency_key: str, donation_id: str, amount_minor: int | None
) -> tuple[Refund, str, str]:
    """Claim the key and reserve the amount; returns the refund, the processor name and the charge reference.

    Raises :class:`RefundRefusedError` when the refund cannot be made (nothing is changed then).
    """
    async with connection.transaction():
        existing = await connection.fetchrow(
            f"SELECT {_REFUND_COLUMNS} FROM surge.refunds WHERE api_key_id = $1 AND idempotency_key = $2",
            api_key_id,
            idempotency_key,
        )
        donation = await connection.fetchrow(
            """SELECT id, status, amount_minor, currency, processor, processor_reference,
                      amount_minor - refunded_minor - refund_reserved_minor - disputed_minor AS refundable
                 FROM surge.donations WHERE id = $1 FOR UPDATE""",
            donation_id,
        )
        if donation is None:
            raise RefundRefusedError(RefundRefusal.DONATION_MISSING, donation_id)
        if existing is not None:
            refund = Refund.from_row(existing)
            if refund.donation_id != donation_id or (amount_minor is not None and amount_minor != refund.amount_minor):
                raise RefundRefusedError(RefundRefusal.IDEMPOTENCY_MISMATCH, donation_id)
            return refund, donation["processor"], donation["processor_reference"]
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
            f"""INSERT INTO surge.refunds (id, donation_id, api_key_id, idempotency_key, amount_minor, currency, status)
                VALUES ($1, $2, $3, $4, $5, $6, 'pending') RETURNING {_REFUND_COLUMNS}""",
            "re_" + secrets.token_hex(12),
            donation_id,
            api_key_id,
            idempotency_key,
            amount,
            donation["currency"],
        )
        return Refund.from_row(row), donation["processor"], donation["processor_reference"]


async def send_refund(processor: Processor, refund: Refund, charge_reference: str, timeout_s: float) -> RefundResult:
    request = RefundRequest(
        idempotency_key=f"surge-{refund.id}",
        refund_id=refund.id,
        processor_reference=charge_reference,
        amount=Money(refund.amount_minor, refund.currency),
    )
    try:
        async with asyncio.timeout(timeout_s):
            return await processor.refund(request)
    except TimeoutError:
        return RefundResult(RefundStatus.UNKNOWN, message="the processor did not answer in time")
    except Exception:
        _logger.exception("%s.refund raised; treating the outcome as unknown", processor.name)
        return RefundResult(RefundStatus.UNKNOWN, message="the refund call failed")


async def finish_refund(
    connection: asyncpg.Connection,
    directory: AccountDirectory,
    refund_id: str,
    succeeded: bool,
    processor_reference: str | None,
    message: str | None = None,
) -> Refund:
    """Book a pending refund's final outcome (inside the caller's transaction); a final refund is left as it is."""
    row = await connection.fetchrow(
        f"""UPDATE surge.refunds SET status = $2, processor_reference = coalesce($3, processor_reference),
                   failure_message = $4, updated_at = now()
             WHERE id = $1 AND status = 'pending' RETURNING {_REFUND_COLUMNS}""",
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
