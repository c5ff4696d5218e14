"""Everything Surge knows about one donation, for finance's donation page: the donation, its refunds, the processor
events about it, its ledger entries, its receipts and the people who acted on it — and its history, merged in time
order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from adapters.base import ChargeResult, EventType, Processor
from engine.audit import AuditEvent, read
from engine.pipeline.charger import processor_idempotency_key
from engine.pipeline.donations import DONATION_COLUMNS, Donation
from ledger.currencies import format_minor
from ledger.reads import EntryPosting, entry_postings

DISPUTE_EVENTS = tuple(t.value for t in (EventType.DISPUTE_CREATED, EventType.DISPUTE_WON, EventType.DISPUTE_LOST))


@dataclass(frozen=True, slots=True)
class Moment:
    at: datetime
    what: str


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    reference: str
    postings: list[EntryPosting]


@dataclass(frozen=True, slots=True)
class DonationRecord:
    donation: Donation
    refunds: list[dict[str, Any]]
    events: list[dict[str, Any]]
    entries: list[LedgerEntry]
    actions: list[AuditEvent]
    receipts: list[dict[str, Any]]

    @property
    def history(self) -> list[Moment]:
        d = self.donation
        moments = [Moment(d.created_at, f"received: {_money(d.amount_minor, d.currency)} for {d.campaign}")]
        if d.settled_at is not None:
            retries = f" after {d.attempts} queued attempt(s)" if d.attempts else ""
            moments.append(Moment(d.settled_at, f"{d.status}{retries}"))
        for refund in self.refunds:
            amount = _money(refund["amount_minor"], refund["currency"].strip())
            moments.append(Moment(refund["created_at"], f"refund {refund['id']} of {amount} asked"))
            if refund["settled_at"] is not None:
                moments.append(Moment(refund["settled_at"], f"refund {refund['id']} {refund['status']}"))
            if refund["returned_at"] is not None:
                moments.append(Moment(refund["returned_at"], f"refund {refund['id']} returned by the processor"))
        for event in self.events:
            outcome = event["outcome"] or "received"
            moments.append(Moment(event["received_at"], f"processor event {event['type']} ({outcome})"))
        for receipt in self.receipts:
            if receipt["sent_at"] is not None:
                moments.append(Moment(receipt["sent_at"], f"{receipt['kind']} receipt sent to {receipt['recipient']}"))
        for action in self.actions:
            moments.append(Moment(action.at, f"{action.action.replace('_', ' ')} by {action.actor}"))
        return sorted(moments, key=lambda moment: moment.at)


def _money(amount_minor: int, currency: str) -> str:
    return f"{format_minor(amount_minor, currency)} {currency}"


async def donation_record(connection: asyncpg.Connection, donation_id: str) -> DonationRecord | None:
    row = await connection.fetchrow(f"SELECT {DONATION_COLUMNS} FROM surge.donations WHERE id = $1", donation_id)
    if row is None:
        return None
    donation = Donation.from_row(row)
    refunds = [
        dict(r)
        for r in await connection.fetch(
            """SELECT id, amount_minor, currency, status, processor_reference, origin, failure_message, created_at,
                      settled_at, returned_at, needs_review_at
                 FROM surge.refunds WHERE donation_id = $1 ORDER BY created_at, id""",
            donation_id,
        )
    ]
    events = [
        dict(e)
        for e in await connection.fetch(
            """SELECT processor, event_id, type, object_id, outcome, outcome_reason, received_at
                 FROM surge.processor_events
                WHERE donation_id = $1 OR ($2::text IS NOT NULL AND charge_reference = $2)
                ORDER BY received_at, event_id""",
            donation_id,
            donation.processor_reference,
        )
    ]
    references = [donation.id, f"fee:{donation.id}"]
    for refund in refunds:
        references += [refund["id"], f"{refund['id']}:returned"]
    for dispute in sorted({e["object_id"] for e in events if e["type"] in DISPUTE_EVENTS and e["object_id"]}):
        references += [f"dispute:{dispute}", f"dispute-fee:{dispute}", f"dispute-won:{dispute}"]
    entries = []
    for reference in references:
        postings = await entry_postings(connection, reference)
        if postings:
            entries.append(LedgerEntry(reference, postings))
    actions = await read(connection, subject=donation_id, limit=200)
    receipts = [
        dict(r)
        for r in await connection.fetch(
            """SELECT id, kind, refund_id, recipient, status, attempts, message_id, last_error, created_at, sent_at
                 FROM surge.receipts WHERE donation_id = $1 ORDER BY created_at, id""",
            donation_id,
        )
    ]
    return DonationRecord(donation, refunds, events, entries, actions, receipts)


PROCESSOR_LOOKUP_TIMEOUT_S = 3.0


async def processor_record(processors: Sequence[Processor], donation: Donation) -> ChargeResult | str:
    """What the processor itself says about the donation's charge now, or why that cannot be said."""
    processor = next((p for p in processors if p.name == donation.processor), None)
    if processor is None:
        return "no processor configured in this process charged it" if donation.processor else "never sent"
    try:
        async with asyncio.timeout(PROCESSOR_LOOKUP_TIMEOUT_S):
            return await processor.lookup(processor_idempotency_key(donation.id), donation.processor_reference)
    except TimeoutError:
        return f"{processor.name} did not answer within {PROCESSOR_LOOKUP_TIMEOUT_S:.0f} s"
    except Exception as error:  # any adapter failure is shown, never an error page
        return f"{processor.name} lookup failed: {error}"
