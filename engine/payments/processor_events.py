"""Processor events (verified webhooks): each event id is processed once, in one transaction with its effects.

- charge succeeded / failed: settles a donation still open (the webhook can beat the lookup);
- refund events: settle Surge's refunds, book refunds made outside Surge once (engine/payments/refund_events.py);
- dispute created, won or lost: see engine/payments/disputes.py;
- payout paid: moves money from processor clearing to the bank (engine/payments/payouts.py).
"""

from __future__ import annotations

import logging

import asyncpg
import orjson

from adapters.base import EventType, ProcessorEvent
from engine.payments.disputes import dispute_closed, dispute_created
from engine.payments.payouts import payout_paid
from engine.payments.refund_events import charge_refunded, refund_updated
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
            fee_minor=event.fee.amount_minor if event.fee and succeeded else None,
            decline_code=event.decline_code,
            failure_message=None if succeeded else "declined (processor event)",
        )
        await commit_settlements(connection, directory, [settlement])
    elif event.type in (EventType.CHARGE_REFUNDED, EventType.REFUND_UPDATED):
        await _external_refund(connection, directory, donation, event)
    elif event.type is EventType.DISPUTE_CREATED:
        await dispute_created(connection, directory, processor, donation, event)
    elif event.type in (EventType.DISPUTE_WON, EventType.DISPUTE_LOST):
        await dispute_closed(connection, directory, donation, event)


async def _external_refund(
    connection: asyncpg.Connection, directory: AccountDirectory, donation: asyncpg.Record, event: ProcessorEvent
) -> None:
    # Refund events settle Surge's refunds and book others exactly once: engine/payments/refund_events.py
    if event.type is EventType.REFUND_UPDATED:
        await refund_updated(connection, directory, donation, event)
    else:
        await charge_refunded(connection, directory, donation, event)
