"""Refund events from the processor: settle Surge's own refunds, book refunds made elsewhere — each exactly once.

A refund event (``REFUND_UPDATED``: Stripe's ``refund.created`` / ``refund.updated`` / ``refund.failed``) names one
refund: its processor id (``object_id``) and, when Surge made it, Surge's refund id from its metadata
(``refund_id``). Surge's refund rows are committed before the processor is called, so a refund naming no refund
Surge knows was made elsewhere (the processor's dashboard) and is booked once, with its processor id, which a unique
index keeps to one row.

A ``charge.refunded`` event (``CHARGE_REFUNDED``) may not say which refund it is about (Stripe stopped embedding the
charge's refunds in API 2022-11-15). It then books only what no refund Surge knows of can explain: the charge's
cumulative refunded amount beyond what the donation has refunded or reserved. Such a refund has no processor id yet;
the refund event of the same refund, when it comes, attaches its id to that row instead of booking it again.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets

import asyncpg

from adapters.base import ProcessorEvent, RefundStatus
from engine.payments.refunds import Refund, book_refund, finish_refund
from ledger.accounts import AccountDirectory

_logger = logging.getLogger(__name__)

_COLUMNS = "id, donation_id, amount_minor, currency, status, processor_reference, failure_message, created_at"


async def refund_updated(
    connection: asyncpg.Connection, directory: AccountDirectory, donation: asyncpg.Record, event: ProcessorEvent
) -> None:
    """Apply one refund's state, from an event that names it."""
    if event.object_id is None or event.refund_status is None:
        _logger.warning("refund event %s names no refund or no status; nothing to do", event.id)
        return
    known = await connection.fetchrow(
        f"""SELECT {_COLUMNS}, origin FROM surge.refunds
             WHERE donation_id = $1 AND (($2::text IS NOT NULL AND id = $2) OR processor_reference = $3)
             ORDER BY (id = $2) DESC NULLS LAST LIMIT 1 FOR UPDATE""",
        donation["id"],
        event.refund_id,
        event.object_id,
    )
    if known is not None:
        await _settle_known(connection, directory, Refund.from_row(known), event)
    elif event.refund_status is RefundStatus.SUCCEEDED:
        await _book_refund_made_elsewhere(connection, directory, donation, event)


async def _settle_known(
    connection: asyncpg.Connection, directory: AccountDirectory, refund: Refund, event: ProcessorEvent
) -> None:
    unfinished = refund.status in ("refunding", "pending")
    status = event.refund_status
    if status is RefundStatus.SUCCEEDED and unfinished:
        await finish_refund(connection, directory, refund.id, True, event.object_id)
    elif status is RefundStatus.FAILED and unfinished:
        await finish_refund(connection, directory, refund.id, False, event.object_id, "the refund failed")
    elif status is RefundStatus.PENDING and unfinished:
        await connection.execute(
            """UPDATE surge.refunds SET status = 'pending', processor_reference = coalesce(processor_reference, $2),
                      updated_at = now() WHERE id = $1""",
            refund.id,
            event.object_id,
        )
    elif status is RefundStatus.FAILED and refund.status == "succeeded":
        # The money came back to the processor balance after the refund had succeeded (Stripe: a refund can fail
        # later): reconciliation shows it; the books are not changed by guesswork.
        _logger.error("refund %s (%s) failed after it succeeded: for reconciliation", refund.id, event.object_id)
    elif refund.processor_reference is None and status is RefundStatus.SUCCEEDED:
        await connection.execute(
            "UPDATE surge.refunds SET processor_reference = $2, updated_at = now() WHERE id = $1",
            refund.id,
            event.object_id,
        )


async def _book_refund_made_elsewhere(
    connection: asyncpg.Connection, directory: AccountDirectory, donation: asyncpg.Record, event: ProcessorEvent
) -> None:
    if event.amount is None:
        _logger.error("refund event %s has no amount; not booked", event.id)
        return
    # Booked already from a charge.refunded that could not name it: give that row its id, book nothing more.
    attached = await connection.fetchval(
        """UPDATE surge.refunds SET processor_reference = $3, updated_at = now()
            WHERE id = (SELECT id FROM surge.refunds
                         WHERE donation_id = $1 AND origin = 'processor_charge' AND processor_reference IS NULL
                           AND status = 'succeeded' AND amount_minor = $2
                         ORDER BY created_at LIMIT 1 FOR UPDATE)
        RETURNING id""",
        donation["id"],
        event.amount.amount_minor,
        event.object_id,
    )
    if attached is None:
        await _book(connection, directory, donation, event, event.amount.amount_minor, "processor_refund")


async def charge_refunded(
    connection: asyncpg.Connection, directory: AccountDirectory, donation: asyncpg.Record, event: ProcessorEvent
) -> None:
    """A charge's refunded amount grew. With the refund named (embedded), it is handled as that refund's event;
    unnamed, only what no known refund explains is booked."""
    if event.object_id is not None:
        status = event.refund_status or RefundStatus.SUCCEEDED
        await refund_updated(connection, directory, donation, _with_refund_status(event, status))
        return
    if donation["status"] != "succeeded":
        return
    current = await connection.fetchrow(
        "SELECT refunded_minor + refund_reserved_minor AS known, currency FROM surge.donations WHERE id = $1",
        donation["id"],
    )
    if event.amount_refunded is not None:
        if event.amount_refunded.currency != current["currency"]:
            _logger.error("refund event %s is in %s, not the donation's currency", event.id, event.amount_refunded)
            return
        unexplained = event.amount_refunded.amount_minor - current["known"]
        amount = unexplained if event.amount is None else min(unexplained, event.amount.amount_minor)
    else:
        # Without the cumulative amount nothing can tell a refund Surge knows from another: book only when the
        # donation has no refund at all that could be this one.
        any_refund = await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM surge.refunds WHERE donation_id = $1 AND status <> 'failed')",
            donation["id"],
        )
        amount = 0 if any_refund or event.amount is None else event.amount.amount_minor
    if amount <= 0:
        _logger.info("charge.refunded %s is explained by refunds Surge knows; nothing booked", event.id)
        return
    await _book(connection, directory, donation, event, amount, "processor_charge")


def _with_refund_status(event: ProcessorEvent, status: RefundStatus) -> ProcessorEvent:
    return dataclasses.replace(event, refund_status=status)


async def _book(
    connection: asyncpg.Connection,
    directory: AccountDirectory,
    donation: asyncpg.Record,
    event: ProcessorEvent,
    amount_minor: int,
    origin: str,
) -> None:
    """Book a refund made outside Surge: it is refunded at once (no reservation), within the unrefunded amount."""
    if donation["status"] != "succeeded":
        return
    row = await connection.fetchrow(
        """UPDATE surge.donations SET refunded_minor = refunded_minor + $2, updated_at = now()
            WHERE id = $1 AND amount_minor - refunded_minor - refund_reserved_minor - disputed_minor >= $2
        RETURNING campaign, election, donor_key, processor, currency""",
        donation["id"],
        amount_minor,
    )
    if row is None:
        _logger.error("refund event %s exceeds the unrefunded amount of %s", event.id, donation["id"])
        return
    created = await connection.fetchrow(
        f"""INSERT INTO surge.refunds (id, donation_id, amount_minor, currency, status, processor_reference, origin,
                                       settled_at)
            VALUES ($1, $2, $3, $4, 'succeeded', $5, $6, now()) RETURNING {_COLUMNS}""",
        "re_" + secrets.token_hex(12),
        donation["id"],
        amount_minor,
        row["currency"],
        event.object_id if origin == "processor_refund" else None,
        origin,
    )
    await book_refund(connection, directory, Refund.from_row(created), row)
