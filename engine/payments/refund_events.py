"""Refund events from the processor: settle Surge's own refunds, book refunds made elsewhere — each exactly once.

A refund event (``REFUND_UPDATED``: Stripe's ``refund.created`` / ``refund.updated`` / ``refund.failed``) names one
refund: its processor id (``object_id``) and, when Surge made it, Surge's refund id from its metadata
(``refund_id``). Surge's refund rows are committed before the processor is called, so a refund naming no refund
Surge knows was made elsewhere (the processor's dashboard) and is booked once, with its processor id, which a unique
index keeps to one row.

A ``charge.refunded`` event (``CHARGE_REFUNDED``) may not say which refund it is about (Stripe stopped embedding the
charge's refunds in API 2022-11-15). It then books only what no refund Surge knows of can explain: the charge's
cumulative refunded amount beyond what the donation has refunded or reserved. Such an unnamed row has no processor
id: its money belongs to refunds made elsewhere whose own events have not come yet — not necessarily one refund, nor
one of the same amount (an outside refund of 20 not delivered yet, Surge's refund of 14, then Stripe's
charge.refunded for the 14 with a refunded total of 34: 14 of the outside 20 is booked unnamed at once).

Attribution keeps the books equal to the processor's refunded total whatever the order: each unnamed row has an
attributed part (``attributed_minor``, 0..amount); the rest is open. A named outside refund R of amount A, when its
event comes, first claims the open parts of its donation's unnamed rows, oldest first (the donation row and those
rows locked), and books only A minus what it claimed — nothing when they cover it. Each claim is recorded in
``surge.refund_attributions`` (row, R's id, amount), and the lookup of known refunds consults it, so a later event
about R books nothing again. When R claims one whole unnamed row and nothing else (the row was R), R's id is also
attached to that row, as before. Why claiming is enough: an unnamed booking never exceeds what outside refunds not
yet delivered amount to beyond the open parts already booked, so once every outside refund is delivered no part is
left open and each was counted once.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets

import asyncpg

from adapters.base import ProcessorEvent, RefundStatus
from engine.payments.parked_events import APPLIED, EventOutcome, WaitingFor, not_yet
from engine.payments.refund_returns import return_refund
from engine.payments.refunds import Refund, book_refund, finish_refund
from ledger.accounts import AccountDirectory

_logger = logging.getLogger(__name__)

_COLUMNS = "id, donation_id, amount_minor, currency, status, processor_reference, failure_message, created_at"


async def refund_updated(
    connection: asyncpg.Connection, directory: AccountDirectory, donation: asyncpg.Record, event: ProcessorEvent
) -> EventOutcome:
    """Apply one refund's state, from an event that names it."""
    if event.object_id is None or event.refund_status is None:
        _logger.warning("refund event %s names no refund or no status; nothing to do", event.id)
        return APPLIED
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
    elif await _absorbed(connection, event.object_id):
        # Booked already, as the open parts of unnamed rows it claimed: nothing more to book.
        if event.refund_status is RefundStatus.FAILED:
            _logger.error("refund %s failed after it was booked: for reconciliation", event.object_id)
    elif event.refund_status is RefundStatus.SUCCEEDED:
        return await _book_refund_made_elsewhere(connection, directory, donation, event)
    return APPLIED


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
        # later): reversed by a new entry (engine/payments/refund_returns.py).
        await return_refund(connection, directory, refund.id, None)
    elif refund.processor_reference is None and status is RefundStatus.SUCCEEDED:
        await connection.execute(
            "UPDATE surge.refunds SET processor_reference = $2, updated_at = now() WHERE id = $1",
            refund.id,
            event.object_id,
        )


async def _book_refund_made_elsewhere(
    connection: asyncpg.Connection, directory: AccountDirectory, donation: asyncpg.Record, event: ProcessorEvent
) -> EventOutcome:
    if event.amount is None:
        _logger.error("refund event %s has no amount; not booked", event.id)
        return APPLIED
    # Booked already, in part or whole, from charge.refunded events that could not name it: claim those open parts.
    amount = event.amount.amount_minor
    claimed = 0
    open_rows = await connection.fetch(
        """SELECT id, amount_minor, attributed_minor FROM surge.refunds
            WHERE donation_id = $1 AND origin = 'processor_charge' AND processor_reference IS NULL
              AND status = 'succeeded' AND attributed_minor < amount_minor
            ORDER BY created_at, id FOR UPDATE""",
        donation["id"],
    )
    needed = amount - min(amount, sum(row["amount_minor"] - row["attributed_minor"] for row in open_rows))
    if needed > await _room(connection, donation["id"]):
        # Surge's own refund still holds what the processor refused it, or a dispute holds it: wait, parked, for
        # the reservation's release (or the dispute's end) rather than book more than was given.
        return not_yet(WaitingFor.REFUND_ROOM)
    for row in open_rows:
        if claimed == amount:
            break
        part = min(amount - claimed, row["amount_minor"] - row["attributed_minor"])
        whole = part == amount == row["amount_minor"]  # this row was that refund: it gets its id
        await connection.execute(
            """UPDATE surge.refunds SET attributed_minor = attributed_minor + $2,
                      processor_reference = CASE WHEN $3 THEN $4 ELSE processor_reference END, updated_at = now()
                WHERE id = $1""",
            row["id"],
            part,
            whole,
            event.object_id,
        )
        await connection.execute(
            """INSERT INTO surge.refund_attributions (refund_row_id, processor_refund_id, amount_minor)
               VALUES ($1, $2, $3)""",
            row["id"],
            event.object_id,
            part,
        )
        claimed += part
    if claimed < amount:
        await _book(connection, directory, donation, event, amount - claimed, "processor_refund")
    return APPLIED


async def _room(connection: asyncpg.Connection, donation_id: str) -> int:
    """What the donation has left that is neither refunded, reserved for a refund nor disputed (its row is locked)."""
    return await connection.fetchval(
        """SELECT amount_minor - refunded_minor - refund_reserved_minor - disputed_minor FROM surge.donations
            WHERE id = $1""",
        donation_id,
    )


async def _absorbed(connection: asyncpg.Connection, processor_refund_id: str) -> bool:
    """Whether the processor refund was booked by claiming the open parts of unnamed refunds."""
    return bool(
        await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM surge.refund_attributions WHERE processor_refund_id = $1)",
            processor_refund_id,
        )
    )


async def charge_refunded(
    connection: asyncpg.Connection, directory: AccountDirectory, donation: asyncpg.Record, event: ProcessorEvent
) -> EventOutcome:
    """A charge's refunded amount grew. With the refund named (embedded), it is handled as that refund's event;
    unnamed, only what no known refund explains is booked."""
    if event.object_id is not None:
        status = event.refund_status or RefundStatus.SUCCEEDED
        return await refund_updated(connection, directory, donation, _with_refund_status(event, status))
    if donation["status"] != "succeeded":
        return APPLIED
    current = await connection.fetchrow(
        "SELECT refunded_minor + refund_reserved_minor AS known, currency FROM surge.donations WHERE id = $1",
        donation["id"],
    )
    if event.amount_refunded is not None:
        if event.amount_refunded.currency != current["currency"]:
            _logger.error("refund event %s is in %s, not the donation's currency", event.id, event.amount_refunded)
            return APPLIED
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
        return APPLIED
    await _book(connection, directory, donation, event, amount, "processor_charge")
    return APPLIED


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
