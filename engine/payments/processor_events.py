"""Processor events (verified webhooks): each event id is processed once, in one transaction with its effects.

- charge succeeded / failed: settles a donation still open (the webhook can beat the lookup);
- charge refunded: books a refund made outside Surge (the processor's dashboard), unless Surge already knows it;
- dispute created, won or lost: see engine/payments/disputes.py;
- payout paid: moves money from processor clearing to the bank (engine/payments/payouts.py).
"""

from __future__ import annotations

import logging
import secrets

import asyncpg
import orjson

from adapters.base import EventType, ProcessorEvent
from engine.payments.disputes import dispute_closed, dispute_created
from engine.payments.fees import record_late_fee
from engine.payments.payouts import payout_paid
from engine.payments.refunds import Refund, book_refund
from engine.pipeline.settlement import Settlement, commit_settlements
from ledger.accounts import AccountDirectory

_logger = logging.getLogger(__name__)


async def process_event(
    connection: asyncpg.Connection, directory: AccountDirectory, processor: str, event: ProcessorEvent
) -> bool:
    """Apply ``event``; False when this event id was processed before (nothing is done again)."""
    async with connection.transaction():
        inserted = await connection.fetchval(
            """INSERT INTO surge.processor_events (processor, event_id, type, payload)
               VALUES ($1, $2, $3, $4::text::jsonb)
               ON CONFLICT DO NOTHING RETURNING true""",
            processor,
            event.id,
            event.type.value,
            # Already JSON text: passed as text, or the pool's jsonb codec would encode it a second time.
            orjson.dumps(dict(event.raw), default=str).decode(),
        )
        if not inserted:
            return False
        await _apply(connection, directory, processor, event)
        return True


async def _donation_for(connection: asyncpg.Connection, event: ProcessorEvent) -> asyncpg.Record | None:
    return await connection.fetchrow(
        """SELECT id, status, amount_minor, currency, campaign, election, donor_key, processor, processor_reference
             FROM surge.donations
            WHERE ($1::text IS NOT NULL AND id = $1) OR ($2::text IS NOT NULL AND processor_reference = $2)
            ORDER BY (id = $1) DESC NULLS LAST LIMIT 1 FOR UPDATE""",
        event.donation_id,
        event.processor_reference,
    )


async def _apply(
    connection: asyncpg.Connection, directory: AccountDirectory, processor: str, event: ProcessorEvent
) -> None:
    if event.type is EventType.PAYOUT_PAID:
        await payout_paid(connection, directory, processor, event)
        return
    if event.type is EventType.IGNORED:
        return
    donation = await _donation_for(connection, event)
    if donation is None:
        _logger.warning("%s event %s (%s) names no known donation", processor, event.id, event.type.value)
        return
    if event.type in (EventType.CHARGE_SUCCEEDED, EventType.CHARGE_FAILED):
        succeeded = event.type is EventType.CHARGE_SUCCEEDED
        settlement = Settlement(
            donation["id"],
            "succeeded" if succeeded else "declined",
            processor,
            processor_reference=event.processor_reference or donation["processor_reference"],
            fee=event.fee if succeeded else None,
            decline_code=event.decline_code,
            failure_message=None if succeeded else "declined (processor event)",
        )
        await commit_settlements(connection, directory, [settlement])
    elif event.type is EventType.CHARGE_UPDATED and event.fee is not None:
        await record_late_fee(connection, directory, donation["id"], event.fee)
    elif event.type is EventType.CHARGE_REFUNDED:
        await _external_refund(connection, directory, donation, event)
    elif event.type is EventType.DISPUTE_CREATED:
        await dispute_created(connection, directory, processor, donation, event)
    elif event.type in (EventType.DISPUTE_WON, EventType.DISPUTE_LOST):
        await dispute_closed(connection, directory, donation, event)


async def _external_refund(
    connection: asyncpg.Connection, directory: AccountDirectory, donation: asyncpg.Record, event: ProcessorEvent
) -> None:
    if event.object_id is not None:
        known = await connection.fetchval(
            "SELECT id FROM surge.refunds WHERE processor_reference = $1", event.object_id
        )
        if known is not None:
            return  # Surge made this refund and booked it (or will, when its call returns)
    if event.amount is None or donation["status"] != "succeeded":
        return
    row = await connection.fetchrow(
        """UPDATE surge.donations SET refunded_minor = refunded_minor + $2, updated_at = now()
            WHERE id = $1 AND amount_minor - refunded_minor - refund_reserved_minor - disputed_minor >= $2
        RETURNING campaign, election, donor_key, processor""",
        donation["id"],
        event.amount.amount_minor,
    )
    if row is None:
        _logger.error("refund event %s exceeds the unrefunded amount of %s", event.id, donation["id"])
        return
    created = await connection.fetchrow(
        """INSERT INTO surge.refunds (id, donation_id, amount_minor, currency, status, processor_reference)
           VALUES ($1, $2, $3, $4, 'succeeded', $5)
           RETURNING id, donation_id, amount_minor, currency, status, processor_reference, failure_message,
                     created_at""",
        "re_" + secrets.token_hex(12),
        donation["id"],
        event.amount.amount_minor,
        event.amount.currency,
        event.object_id,
    )
    await book_refund(connection, directory, Refund.from_row(created), row)
