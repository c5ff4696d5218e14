"""Processor events (verified webhooks): each event id is processed once, in one transaction with its effects.

- charge succeeded / failed: settles a donation still open (the webhook can beat the lookup);
- refund events: settle Surge's refunds, book refunds made outside Surge once (engine/payments/refund_events.py);
- dispute created, won or lost: see engine/payments/disputes.py;
- payout paid: moves money from processor clearing to the bank (engine/payments/payouts.py).

Processors do not promise order, so each event's outcome is recorded with it: applied, duplicate, not applicable
(with the reason), or parked until it can apply (engine/payments/parked_events.py). An applied event may unblock
parked ones naming the same donation (its charge settled, its dispute opened): they are applied in the same
transaction, in the order the processor created them. What is unblocked elsewhere (the pipeline settles a charge)
the sweeper applies (engine/payments/event_sweeper.py).
"""

from __future__ import annotations

import logging

import asyncpg
import orjson

from adapters.base import EventType, ProcessorEvent
from engine.database import INDEX_LOOKUPS_ONLY
from engine.payments import parked_events
from engine.payments.disputes import dispute_closed, dispute_created
from engine.payments.fees import LateFeeOutcome, record_late_fee
from engine.payments.parked_events import APPLIED, EventOutcome, OutcomeKind, WaitingFor, duplicate, never, not_yet
from engine.payments.payouts import payout_paid
from engine.payments.refund_events import charge_refunded, refund_updated
from engine.pipeline.settlement import FINAL_STATUSES, Settlement, commit_settlements
from ledger.accounts import AccountDirectory

_logger = logging.getLogger(__name__)


async def process_event(
    connection: asyncpg.Connection, directory: AccountDirectory, processor: str, event: ProcessorEvent
) -> bool:
    """Process ``event``; False when this event id was received before (nothing is done again)."""
    outcome = await receive_event(connection, directory, processor, event)
    return outcome != _REDELIVERED


_REDELIVERED = duplicate("event id received before")


async def receive_event(
    connection: asyncpg.Connection, directory: AccountDirectory, processor: str, event: ProcessorEvent
) -> EventOutcome:
    """Record ``event`` once and apply it, park it, or note why it never applies; a redelivery changes nothing."""
    async with connection.transaction():
        inserted = await connection.fetchval(
            """INSERT INTO surge.processor_events
                      (processor, event_id, type, payload, object_id, donation_id, charge_reference)
               VALUES ($1, $2, $3, $4::text::jsonb, $5, $6, $7)
               ON CONFLICT DO NOTHING RETURNING true""",
            processor,
            event.id,
            event.type.value,
            # Already JSON text: passed as text, or the pool's jsonb codec would encode it a second time.
            orjson.dumps(dict(event.raw), default=str).decode(),
            event.object_id,
            event.donation_id,
            event.processor_reference,
        )
        if not inserted:
            return _REDELIVERED
        outcome = await _apply(connection, directory, processor, event)
        await parked_events.record_outcome(connection, processor, event.id, outcome)
        if outcome.waiting_for is not None:
            await parked_events.park(connection, processor, event, outcome.waiting_for)
            _logger.info("%s event %s (%s) parked: %s", processor, event.id, event.type.value, outcome.reason)
        elif outcome.kind is OutcomeKind.APPLIED:
            await _apply_unblocked(connection, directory, event)
        return outcome


async def retry_parked(
    connection: asyncpg.Connection, directory: AccountDirectory, processor: str, event_id: str
) -> EventOutcome | None:
    """Apply one parked event if its wait is over (the sweeper's unit of work, one transaction); None when it was
    resolved meanwhile or another process is applying it."""
    async with connection.transaction():
        parked = await parked_events.claim(connection, processor, event_id)
        if parked is None:
            return None
        outcome = await _apply_parked(connection, directory, parked)
        if outcome.kind is OutcomeKind.APPLIED:
            await _apply_unblocked(connection, directory, parked.event)
        return outcome


async def _apply_parked(
    connection: asyncpg.Connection, directory: AccountDirectory, parked: parked_events.ParkedEvent
) -> EventOutcome:
    outcome = await _apply(connection, directory, parked.processor, parked.event)
    if outcome.waiting_for is not None:
        await parked_events.park(connection, parked.processor, parked.event, outcome.waiting_for)
    else:
        await parked_events.resolve(connection, parked.processor, parked.event.id, outcome)
        _logger.info(
            "%s event %s (%s) parked since %s: %s",
            parked.processor,
            parked.event.id,
            parked.event.type.value,
            parked.parked_at.isoformat(),
            outcome.kind.value if outcome.reason is None else f"{outcome.kind.value} ({outcome.reason})",
        )
    return outcome


async def _apply_unblocked(connection: asyncpg.Connection, directory: AccountDirectory, event: ProcessorEvent) -> None:
    """Apply the parked events naming the donation ``event`` just changed, until a pass changes nothing more (a
    dispute's closing waits for its opening, parked behind the same charge)."""
    if event.donation_id is None and event.processor_reference is None:
        return  # a payout: no parked event waits for it
    donation = await _donation_for(connection, event)
    if donation is None:
        return
    progress = True
    while progress:
        progress = False
        for parked in await parked_events.claim_for_donation(
            connection, donation["id"], donation["processor_reference"]
        ):
            outcome = await _apply_parked(connection, directory, parked)
            progress = progress or outcome.waiting_for is None


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
) -> EventOutcome:
    if event.type is EventType.PAYOUT_PAID:
        return await payout_paid(connection, directory, processor, event)
    if event.type is EventType.IGNORED:
        return never("event type not acted on")
    donation = await _donation_for(connection, event)
    if donation is None:
        return not_yet(WaitingFor.DONATION_UNKNOWN)
    if event.type in (EventType.CHARGE_SUCCEEDED, EventType.CHARGE_FAILED):
        return await _settle(connection, directory, processor, donation, event)
    if event.type is EventType.CHARGE_UPDATED:
        return await _late_fee(connection, directory, donation, event)
    # Everything else changes a charge that happened: it waits for the charge's outcome.
    if donation["status"] not in FINAL_STATUSES:
        return not_yet(WaitingFor.DONATION_NOT_FINAL)
    if donation["status"] != "succeeded":
        return never(f"donation {donation['id']} is {donation['status']}: nothing was charged")
    if event.type in (EventType.CHARGE_REFUNDED, EventType.REFUND_UPDATED):
        return await _external_refund(connection, directory, donation, event)
    if event.type is EventType.DISPUTE_CREATED:
        return await dispute_created(connection, directory, processor, donation, event)
    if event.type in (EventType.DISPUTE_WON, EventType.DISPUTE_LOST):
        return await dispute_closed(connection, directory, donation, event)
    raise ValueError(f"event type {event.type.value} has no handler")


async def _settle(
    connection: asyncpg.Connection,
    directory: AccountDirectory,
    processor: str,
    donation: asyncpg.Record,
    event: ProcessorEvent,
) -> EventOutcome:
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
    await connection.execute(INDEX_LOOKUPS_ONLY)
    [settled] = await commit_settlements(connection, directory, [settlement])
    if settled:
        return APPLIED
    if (donation["status"] == "succeeded") == succeeded:
        return duplicate(f"donation {donation['id']} already settled as {donation['status']}")
    _logger.warning(
        "%s event %s says the charge %s, but donation %s is already %s",
        processor,
        event.id,
        "succeeded" if succeeded else "failed",
        donation["id"],
        donation["status"],
    )
    return never(f"donation {donation['id']} already settled as {donation['status']}")


async def _late_fee(
    connection: asyncpg.Connection, directory: AccountDirectory, donation: asyncpg.Record, event: ProcessorEvent
) -> EventOutcome:
    """A fee reported after the charge (engine/payments/fees.py): kept or booked whatever the donation's state."""
    if event.fee is None:
        return never("the charge update carries no fee")
    outcome = await record_late_fee(connection, directory, donation["id"], event.fee)
    if outcome is LateFeeOutcome.ALREADY_KNOWN:
        return duplicate(f"the fee of donation {donation['id']} is known")
    if outcome is LateFeeOutcome.NOT_CHARGED:
        return never(f"donation {donation['id']} was not charged: no fee")
    return APPLIED


async def _external_refund(
    connection: asyncpg.Connection, directory: AccountDirectory, donation: asyncpg.Record, event: ProcessorEvent
) -> EventOutcome:
    # Refund events settle Surge's refunds and book others exactly once: engine/payments/refund_events.py
    if event.type is EventType.REFUND_UPDATED:
        return await refund_updated(connection, directory, donation, event)
    return await charge_refunded(connection, directory, donation, event)
