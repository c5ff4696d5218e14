"""Refunds, written in batches. They lock their charges (in id order, so concurrent batches cannot deadlock) before
reading what was already refunded; a key used again must repeat its first request, as at Stripe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from adapters.base import SURGE_REFUND_ID, RefundRequest, RefundResult, RefundStatus
from adapters.simulated import webhooks
from adapters.simulated.record import ChargeRecordStatus, RecordedRefund
from adapters.simulated.store.balance import Movement, insert_balance_transactions
from adapters.simulated.store.charges import IDEMPOTENCY_MISMATCH_MESSAGE
from adapters.simulated.store.events import insert_events, new_event
from ledger.money import Money


@dataclass(frozen=True, slots=True)
class RefundWrite:
    reference: str
    event_id: str
    request: RefundRequest


@dataclass(slots=True)
class _ChargeForRefund:
    id: str
    amount: int
    currency: str
    status: str
    donation_id: str
    refunded: int
    disputed: bool


async def write_refunds(
    connection: asyncpg.Connection, account: str, writes: Sequence[RefundWrite]
) -> list[RefundResult]:
    charge_ids = sorted({w.request.processor_reference for w in writes})
    charges = await _lock_charges_for_refund(connection, account, charge_ids)
    keys = [w.request.idempotency_key for w in writes]
    existing = {
        row["idempotency_key"]: row
        for row in await connection.fetch(
            """SELECT id, idempotency_key, refund_id, charge_id, amount, currency FROM simulator.refunds
                WHERE account = $1 AND idempotency_key = ANY($2::text[])""",
            account,
            keys,
        )
    }
    now = await connection.fetchval("SELECT clock_timestamp()")
    results, created = [], []
    for write in writes:
        result = _plan_refund(write, charges, existing)
        if result is None:
            created.append(write)
            charges[write.request.processor_reference].refunded += write.request.amount.amount_minor
            # A later write with the same key in this batch is a replay of this one.
            existing[write.request.idempotency_key] = _as_row(write)
            result = RefundResult(RefundStatus.SUCCEEDED, write.reference)
        results.append(result)
    if created:
        await _insert_refunds(connection, account, created, charges, now)
    return results


async def _lock_charges_for_refund(
    connection: asyncpg.Connection, account: str, charge_ids: list[str]
) -> dict[str, _ChargeForRefund]:
    # Lock first, read refunded totals in a later statement: a statement's snapshot predates the locks it waits for.
    locked = await connection.fetch(
        """SELECT id, amount, currency, status, donation_id FROM simulator.charges
            WHERE account = $1 AND id = ANY($2::text[]) ORDER BY id FOR UPDATE""",
        account,
        charge_ids,
    )
    totals = await connection.fetch(
        """SELECT c.id,
                  (SELECT coalesce(sum(r.amount), 0)::bigint FROM simulator.refunds r WHERE r.charge_id = c.id)
                      AS refunded,
                  EXISTS (SELECT 1 FROM simulator.disputes d WHERE d.charge_id = c.id AND d.status <> 'won')
                      AS disputed
             FROM simulator.charges c WHERE c.id = ANY($1::text[])""",
        [row["id"] for row in locked],
    )
    by_id = {row["id"]: row for row in totals}
    return {
        row["id"]: _ChargeForRefund(
            row["id"],
            row["amount"],
            row["currency"],
            row["status"],
            row["donation_id"],
            by_id[row["id"]]["refunded"],
            by_id[row["id"]]["disputed"],
        )
        for row in locked
    }


_REFUND_FINGERPRINT = ("refund_id", "charge_id", "amount", "currency")  # what a replay must repeat


def _as_row(write: RefundWrite) -> Mapping[str, Any]:
    request = write.request
    return {
        "id": write.reference,
        "refund_id": request.refund_id,
        "charge_id": request.processor_reference,
        "amount": request.amount.amount_minor,
        "currency": request.amount.currency,
    }


def _plan_refund(
    write: RefundWrite, charges: dict[str, _ChargeForRefund], existing: Mapping[str, Mapping[str, Any]]
) -> RefundResult | None:
    """The answer when this write is refused or a replay; None when it is to be recorded."""
    request = write.request
    previous = existing.get(request.idempotency_key)
    if previous is not None:
        current = _as_row(write)
        if all(previous[name] == current[name] for name in _REFUND_FINGERPRINT):
            return RefundResult(RefundStatus.SUCCEEDED, previous["id"])
        return RefundResult(
            RefundStatus.FAILED, message=IDEMPOTENCY_MISMATCH_MESSAGE.format(key=request.idempotency_key)
        )
    charge = charges.get(request.processor_reference)
    if charge is None:
        return RefundResult(RefundStatus.FAILED, message=f"No such charge: '{request.processor_reference}'")
    if charge.status != ChargeRecordStatus.SUCCEEDED:
        return RefundResult(RefundStatus.FAILED, message=f"Charge {charge.id} has status {charge.status}: no refund")
    if charge.disputed:
        return RefundResult(RefundStatus.FAILED, message=f"Charge {charge.id} has been disputed.")
    if request.amount.currency != charge.currency:
        message = f"Refund currency {request.amount.currency} differs from the charge's {charge.currency}."
        return RefundResult(RefundStatus.FAILED, message=message)
    if request.amount.amount_minor < 1:
        return RefundResult(RefundStatus.FAILED, message="Refund amount must be at least 1.")
    unrefunded = charge.amount - charge.refunded
    if request.amount.amount_minor > unrefunded:
        message = (
            f"Refund amount ({request.amount.amount_minor}) is greater than unrefunded amount on charge ({unrefunded})."
        )
        return RefundResult(RefundStatus.FAILED, message=message)
    return None


async def _insert_refunds(
    connection: asyncpg.Connection,
    account: str,
    writes: list[RefundWrite],
    charges: Mapping[str, _ChargeForRefund],
    now: datetime,
) -> None:
    await connection.execute(
        """INSERT INTO simulator.refunds
               (id, account, idempotency_key, refund_id, charge_id, amount, currency, created_at)
           SELECT r.id, $1, r.key, r.refund_id, r.charge_id, r.amount, r.currency, $7
             FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $8::text[])
                  AS r(id, key, refund_id, charge_id, amount, currency)""",
        account,
        [w.reference for w in writes],
        [w.request.idempotency_key for w in writes],
        [w.request.refund_id for w in writes],
        [w.request.processor_reference for w in writes],
        [w.request.amount.amount_minor for w in writes],
        now,
        [w.request.amount.currency for w in writes],
    )
    await insert_balance_transactions(
        connection,
        account,
        [Movement("refund", -w.request.amount, 0, w.reference, w.request.processor_reference) for w in writes],
        now,
    )
    events = []
    for write in writes:
        request = write.request
        refund = {
            "id": write.reference,
            "object": "refund",
            **webhooks.money_fields(request.amount),
            "payment_intent": request.processor_reference,
            "status": "succeeded",
            "metadata": {
                "donation_id": charges[request.processor_reference].donation_id,
                "refund_id": request.refund_id,
                SURGE_REFUND_ID: request.refund_id,  # how the engine knows its own refunds in events
            },
        }
        events.append(new_event(write.event_id, webhooks.REFUND_CREATED, now, refund))
    await insert_events(connection, account, events, now)


async def all_refunds(connection: asyncpg.Connection, account: str) -> list[RecordedRefund]:
    rows = await connection.fetch(
        """SELECT id, idempotency_key, refund_id, charge_id, amount, currency, created_at FROM simulator.refunds
            WHERE account = $1 ORDER BY created_at, id""",
        account,
    )
    return [
        RecordedRefund(
            row["id"],
            row["idempotency_key"],
            row["refund_id"],
            row["charge_id"],
            Money(row["amount"], row["currency"]),
            row["created_at"],
        )
        for row in rows
    ]


async def refund_for(
    connection: asyncpg.Connection, account: str, idempotency_key: str, reference: str | None
) -> RecordedRefund | None:
    """The refund recorded for ``idempotency_key`` (or with id ``reference``), or None."""
    row = await connection.fetchrow(
        """SELECT id, idempotency_key, refund_id, charge_id, amount, currency, created_at FROM simulator.refunds
            WHERE account = $1 AND (idempotency_key = $2 OR id = $3) ORDER BY (idempotency_key = $2) DESC LIMIT 1""",
        account,
        idempotency_key,
        reference,
    )
    if row is None:
        return None
    return RecordedRefund(
        row["id"],
        row["idempotency_key"],
        row["refund_id"],
        row["charge_id"],
        Money(row["amount"], row["currency"]),
        row["created_at"],
    )
