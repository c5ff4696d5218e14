"""Disputes: a donor's bank takes the money back until the dispute is decided.

- created: withdraws the disputed amount (disputes ← clearing) and books the dispute fee;
- won: reverses the withdrawal; lost: the contribution no longer counts toward the donor's limit.

Each returns the event's outcome: a dispute opened twice is a duplicate, and a closing that arrives before its
opening is not yet applicable (parked, applied once the opening is).
"""

from __future__ import annotations

import logging

import asyncpg

from adapters.base import EventType, ProcessorEvent
from engine import chart_of_accounts
from engine.payments.fees import Fee, post_with_fees
from engine.payments.parked_events import APPLIED, EventOutcome, WaitingFor, duplicate, never, not_yet
from engine.pipeline.aggregates import remove_contribution
from ledger import reads
from ledger.accounts import AccountDirectory
from ledger.entries import reverse, transfer
from ledger.money import Money
from ledger.posting import post_entries_or_raise

_logger = logging.getLogger(__name__)


async def dispute_created(
    connection: asyncpg.Connection,
    directory: AccountDirectory,
    processor: str,
    donation: asyncpg.Record,
    event: ProcessorEvent,
) -> EventOutcome:
    amount = event.amount or Money(donation["amount_minor"], donation["currency"])
    dispute = event.object_id or event.id
    if await reads.entry_postings(connection, f"dispute:{dispute}"):
        return duplicate(f"dispute {dispute} already opened")
    metadata = {"donation": donation["id"]}
    await connection.execute(
        "UPDATE surge.donations SET disputed_minor = disputed_minor + $2, updated_at = now() WHERE id = $1",
        donation["id"],
        amount.amount_minor,
    )
    withdrawal = transfer(
        f"dispute:{dispute}",
        debit=chart_of_accounts.disputes(donation["campaign"]),
        credit=chart_of_accounts.clearing(processor, amount.currency),
        money=amount,
        memo="dispute: funds withdrawn",
        metadata=metadata,
    )
    # The fee is in the balance's currency, maybe not the dispute's: its own entry, its accounts opened on demand.
    fee = [] if event.fee is None else [Fee(f"dispute-fee:{dispute}", processor, event.fee, "dispute fee", metadata)]
    await post_with_fees(connection, directory, [withdrawal], fee)
    return APPLIED


async def dispute_closed(
    connection: asyncpg.Connection, directory: AccountDirectory, donation: asyncpg.Record, event: ProcessorEvent
) -> EventOutcome:
    dispute = event.object_id or event.id
    # What the withdrawal took out of the processor's clearing account.
    postings = await reads.entry_postings(connection, f"dispute:{dispute}")
    amount = next((-p.amount for p in postings if p.account.startswith("clearing:")), None)
    if amount is None:
        return not_yet(WaitingFor.DISPUTE_NOT_OPENED)
    closed = await _closed_as(connection, dispute)
    if closed is not None:
        return (
            duplicate(f"dispute {dispute} already {closed}")
            if closed == event.type.value
            else never(f"dispute {dispute} already closed as {closed}")
        )
    if event.type is EventType.DISPUTE_WON:
        if await reads.entry_postings(connection, f"dispute-won:{dispute}"):
            return duplicate(f"dispute {dispute} already won")
        await connection.execute(
            "UPDATE surge.donations SET disputed_minor = disputed_minor - $2, updated_at = now() WHERE id = $1",
            donation["id"],
            amount,
        )
        await post_entries_or_raise(
            connection, directory, [reverse(f"dispute-won:{dispute}", f"dispute:{dispute}", memo="dispute won")]
        )
    else:
        await remove_contribution(connection, donation["campaign"], donation["election"], donation["donor_key"], amount)
    return APPLIED


async def _closed_as(connection: asyncpg.Connection, dispute: str) -> str | None:
    """How an earlier event (under another event id) closed this dispute, if one did: a dispute closes once."""
    closed: str | None = await connection.fetchval(
        """SELECT type FROM surge.processor_events
            WHERE object_id = $1 AND type IN ('dispute_won', 'dispute_lost') AND outcome = 'applied' LIMIT 1""",
        dispute,
    )
    return closed
