"""What a processor event did, and the events parked until they can apply.

Processors do not promise order: a refund or a dispute can arrive while the donation is still charging, a dispute's
closing before its opening, an event before Surge has recorded the donation it names. Such an event is not lost
and not applied half-way: it is PARKED with its parsed content (``surge.parked_events``) and applied exactly once
when what it waits for has happened — by the event that unblocks it, in the same transaction, or by the sweeper
(engine/payments/event_sweeper.py) for what happens elsewhere (a charge settled by the pipeline or a lookup).

Outcomes are data (house style): APPLIED, DUPLICATE (already done, maybe under another event id), NOT_YET (parked,
with what it waits for) and NOT_APPLICABLE (never will apply, with the reason: a refund of a declined donation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import asyncpg
import orjson

from adapters.base import EventType, ProcessorEvent, RefundStatus
from engine.pipeline.settlement import FINAL_STATUSES
from ledger.money import Money


class OutcomeKind(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # the event id was processed before, or what it says is already in the books
    NOT_YET = "parked"  # cannot apply yet: parked until what it waits for has happened
    NOT_APPLICABLE = "not_applicable"  # can never apply (the reason says why); recorded, not retried


class WaitingFor(StrEnum):
    DONATION_UNKNOWN = "donation_unknown"  # no donation has the event's id or charge reference (yet)
    DONATION_NOT_FINAL = "donation_not_final"  # the donation is still queued, charging or pending
    DISPUTE_NOT_OPENED = "dispute_not_opened"  # a dispute closed before its opening was applied
    REFUND_ROOM = "refund_room"  # an outside refund larger than what is left unrefunded, reserved or disputed now


@dataclass(frozen=True, slots=True)
class EventOutcome:
    kind: OutcomeKind
    reason: str | None = None
    waiting_for: WaitingFor | None = None

    def __post_init__(self) -> None:
        if (self.kind is OutcomeKind.NOT_YET) != (self.waiting_for is not None):
            raise ValueError("an event waits for something exactly when it is not yet applicable")


APPLIED = EventOutcome(OutcomeKind.APPLIED)


def duplicate(reason: str) -> EventOutcome:
    return EventOutcome(OutcomeKind.DUPLICATE, reason)


def not_yet(waiting_for: WaitingFor) -> EventOutcome:
    return EventOutcome(OutcomeKind.NOT_YET, waiting_for.value, waiting_for)


def never(reason: str) -> EventOutcome:
    return EventOutcome(OutcomeKind.NOT_APPLICABLE, reason)


@dataclass(frozen=True, slots=True)
class ParkedEvent:
    processor: str
    event: ProcessorEvent
    waiting_for: WaitingFor
    parked_at: datetime


_FINAL = sorted(FINAL_STATUSES)

# A parked event is worth another try when what it waits for has happened; anything else waits for the next change.
# One EXISTS per column: "d.id = … OR d.processor_reference = …" could use neither index and read every donation.
_READY = """
    (p.waiting_for = 'donation_unknown' AND (
        EXISTS (SELECT 1 FROM surge.donations d WHERE d.id = p.donation_id)
        OR EXISTS (SELECT 1 FROM surge.donations d WHERE d.processor_reference = p.processor_reference)))
    OR (p.waiting_for = 'donation_not_final' AND (
        EXISTS (SELECT 1 FROM surge.donations d WHERE d.id = p.donation_id AND d.status = ANY($1::text[]))
        OR EXISTS (SELECT 1 FROM surge.donations d
                    WHERE d.processor_reference = p.processor_reference AND d.status = ANY($1::text[]))))
    OR (p.waiting_for = 'dispute_not_opened' AND EXISTS (
        SELECT 1 FROM ledger.entries e WHERE e.reference = 'dispute:' || p.object_id))
"""

_COLUMNS = """p.processor, p.event_id, p.type, p.created, p.donation_id, p.processor_reference, p.object_id,
              p.amount_minor, p.amount_currency, p.fee_minor, p.fee_currency, p.decline_code, p.waiting_for,
              p.parked_at, p.refund_status, p.refund_id, p.amount_refunded_minor, p.amount_refunded_currency,
              e.payload::text AS payload"""


async def record_outcome(connection: asyncpg.Connection, processor: str, event_id: str, outcome: EventOutcome) -> None:
    await connection.execute(
        "UPDATE surge.processor_events SET outcome = $3, outcome_reason = $4 WHERE processor = $1 AND event_id = $2",
        processor,
        event_id,
        outcome.kind.value,
        outcome.reason,
    )


async def park(connection: asyncpg.Connection, processor: str, event: ProcessorEvent, waiting_for: WaitingFor) -> None:
    """Park ``event`` (first time) or note what it waits for now (a retry that is still not applicable)."""
    await connection.execute(
        """INSERT INTO surge.parked_events (processor, event_id, type, created, donation_id, processor_reference,
                                            object_id, amount_minor, amount_currency, fee_minor, fee_currency,
                                            decline_code, waiting_for, refund_status, refund_id,
                                            amount_refunded_minor, amount_refunded_currency)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
           ON CONFLICT (processor, event_id) DO UPDATE
              SET waiting_for = excluded.waiting_for, attempts = surge.parked_events.attempts + 1""",
        processor,
        event.id,
        event.type.value,
        event.created,
        event.donation_id,
        event.processor_reference,
        event.object_id,
        event.amount.amount_minor if event.amount else None,
        event.amount.currency if event.amount else None,
        event.fee.amount_minor if event.fee else None,
        event.fee.currency if event.fee else None,
        event.decline_code,
        waiting_for.value,
        event.refund_status.value if event.refund_status else None,
        event.refund_id,
        event.amount_refunded.amount_minor if event.amount_refunded else None,
        event.amount_refunded.currency if event.amount_refunded else None,
    )


async def resolve(connection: asyncpg.Connection, processor: str, event_id: str, outcome: EventOutcome) -> None:
    if outcome.kind is OutcomeKind.NOT_YET:
        raise ValueError("a parked event is resolved only by an outcome that is final")
    await connection.execute(
        """UPDATE surge.parked_events SET resolved_at = now(), resolution = $3, resolution_reason = $4
            WHERE processor = $1 AND event_id = $2 AND resolved_at IS NULL""",
        processor,
        event_id,
        outcome.kind.value,
        outcome.reason,
    )
    await record_outcome(connection, processor, event_id, outcome)


async def ready_keys(connection: asyncpg.Connection, limit: int) -> list[tuple[str, str]]:
    """Parked events whose wait may be over, oldest event first (not locked: each is claimed in its own transaction)."""
    rows = await connection.fetch(
        f"""SELECT p.processor, p.event_id FROM surge.parked_events p
             WHERE p.resolved_at IS NULL AND ({_READY})
             ORDER BY p.created, p.parked_at LIMIT $2""",
        _FINAL,
        limit,
    )
    return [(row["processor"], row["event_id"]) for row in rows]


async def claim(connection: asyncpg.Connection, processor: str, event_id: str) -> ParkedEvent | None:
    """Lock one waiting parked event for this transaction; None when it was resolved or another process holds it."""
    row = await connection.fetchrow(
        f"""SELECT {_COLUMNS} FROM surge.parked_events p
              JOIN surge.processor_events e USING (processor, event_id)
             WHERE p.processor = $1 AND p.event_id = $2 AND p.resolved_at IS NULL
               FOR UPDATE OF p SKIP LOCKED""",
        processor,
        event_id,
    )
    return None if row is None else _parked(row)


async def claim_for_donation(
    connection: asyncpg.Connection, donation_id: str, processor_reference: str | None
) -> list[ParkedEvent]:
    """Lock the waiting events that name this donation, in the order the processor created them. Rows another
    process holds are skipped, never waited for: that process applies them (and may hold the donation's lock)."""
    rows = await connection.fetch(
        f"""SELECT {_COLUMNS} FROM surge.parked_events p
              JOIN surge.processor_events e USING (processor, event_id)
             WHERE p.resolved_at IS NULL
               AND (p.donation_id = $1 OR ($2::text IS NOT NULL AND p.processor_reference = $2))
             ORDER BY p.created, p.parked_at
               FOR UPDATE OF p SKIP LOCKED""",
        donation_id,
        processor_reference,
    )
    return [_parked(row) for row in rows]


@dataclass(frozen=True, slots=True)
class Backlog:
    waiting: dict[WaitingFor, int]  # parked and not resolved, by what they wait for
    overdue: int  # waiting longer than the bound
    newly_overdue: Sequence[tuple[str, str, str, datetime]]  # (processor, event id, waiting for, parked at)


async def backlog(connection: asyncpg.Connection, age_max_s: float) -> Backlog:
    """Count what waits, and mark (once) the events waiting longer than ``age_max_s`` so they are reported once."""
    async with connection.transaction():
        counts = await connection.fetch(
            """SELECT waiting_for, count(*) AS waiting,
                      count(*) FILTER (WHERE parked_at < now() - make_interval(secs => $1)) AS overdue
                 FROM surge.parked_events WHERE resolved_at IS NULL GROUP BY waiting_for""",
            age_max_s,
        )
        newly = await connection.fetch(
            """UPDATE surge.parked_events SET overdue_reported_at = now()
                WHERE resolved_at IS NULL AND overdue_reported_at IS NULL
                  AND parked_at < now() - make_interval(secs => $1)
            RETURNING processor, event_id, waiting_for, parked_at""",
            age_max_s,
        )
    waiting = {WaitingFor(row["waiting_for"]): row["waiting"] for row in counts}
    overdue = sum(row["overdue"] for row in counts)
    reported = [(r["processor"], r["event_id"], r["waiting_for"], r["parked_at"]) for r in newly]
    return Backlog(waiting, overdue, reported)


def _parked(row: asyncpg.Record) -> ParkedEvent:
    amount = Money(row["amount_minor"], row["amount_currency"]) if row["amount_minor"] is not None else None
    fee = Money(row["fee_minor"], row["fee_currency"]) if row["fee_minor"] is not None else None
    refunded = row["amount_refunded_minor"]
    event = ProcessorEvent(
        id=row["event_id"],
        type=EventType(row["type"]),
        created=row["created"],
        processor_reference=row["processor_reference"],
        donation_id=row["donation_id"],
        amount=amount,
        fee=fee,
        decline_code=row["decline_code"],
        object_id=row["object_id"],
        raw=orjson.loads(row["payload"]),
        refund_status=RefundStatus(row["refund_status"]) if row["refund_status"] else None,
        refund_id=row["refund_id"],
        amount_refunded=Money(refunded, row["amount_refunded_currency"]) if refunded is not None else None,
    )
    return ParkedEvent(row["processor"], event, WaitingFor(row["waiting_for"]), row["parked_at"])
