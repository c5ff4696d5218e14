"""Charges: written through the group committer, many per transaction, with set-based statements; read by key or
reference; settled when they waited for authentication.

Idempotency keys are unique per account in the database, so concurrent charges with one key, from one process or
several, make one row; the loser of a race reads the winner's row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from adapters.base import ChargeRequest
from adapters.simulated import webhooks
from adapters.simulated.record import ChargeRecordStatus, RecordedCharge, SimulatorError
from adapters.simulated.store.balance import Movement, insert_balance_transactions
from adapters.simulated.store.events import StoredEvent, insert_events, new_event, new_id
from ledger.money import Money

IDEMPOTENCY_MISMATCH_MESSAGE = (
    "Keys for idempotent requests can only be used with the same parameters they were first used with. "
    "Try using a key other than '{key}' if you meant to execute a different request."
)


@dataclass(frozen=True, slots=True)
class ChargeWrite:
    reference: str
    request: ChargeRequest
    status: ChargeRecordStatus
    fee_minor: int
    decline_code: str | None
    message: str | None


@dataclass(frozen=True, slots=True)
class ChargeWritten:
    charge: RecordedCharge  # the charge on record for the key: this request's, or the first one's
    created: bool  # False: the key was used before (a replay, or a conflicting reuse)


_CHARGE_COLUMNS = """c.id, c.idempotency_key, c.donation_id, c.campaign, c.payment_method, c.amount, c.currency,
       c.fee, c.status, c.decline_code, c.message, c.created_at,
       (SELECT coalesce(sum(r.amount), 0)::bigint FROM simulator.refunds r WHERE r.charge_id = c.id) AS refunded"""


def _charge(row: asyncpg.Record) -> RecordedCharge:
    currency = row["currency"]
    return RecordedCharge(
        reference=row["id"],
        idempotency_key=row["idempotency_key"],
        donation_id=row["donation_id"],
        campaign=row["campaign"],
        payment_method=row["payment_method"],
        amount=Money(row["amount"], currency),
        fee=Money(row["fee"], currency),
        status=ChargeRecordStatus(row["status"]),
        decline_code=row["decline_code"],
        message=row["message"],
        created=row["created_at"],
        amount_refunded=Money(row["refunded"], currency),
    )


async def write_charges(
    connection: asyncpg.Connection, account: str, writes: Sequence[ChargeWrite]
) -> list[ChargeWritten]:
    """Record each write unless its key is on record already; one result per write, in order."""
    first_by_key: dict[str, ChargeWrite] = {}
    for write in writes:
        first_by_key.setdefault(write.request.idempotency_key, write)
    candidates = list(first_by_key.values())
    rows = await connection.fetch(
        """WITH new_charges AS (
               INSERT INTO simulator.charges (id, account, idempotency_key, donation_id, campaign, payment_method,
                                              amount, currency, fee, status, decline_code, message, metadata)
               SELECT w.id, $1, w.key, w.donation_id, w.campaign, w.payment_method, w.amount, w.currency, w.fee,
                      w.status, w.decline_code, w.message, w.metadata::jsonb
                 FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::text[],
                             $9::bigint[], $10::text[], $11::text[], $12::text[], $13::text[])
                      AS w(id, key, donation_id, campaign, payment_method, amount, currency, fee, status,
                           decline_code, message, metadata)
               ON CONFLICT (account, idempotency_key) DO NOTHING
               RETURNING id, idempotency_key, amount, fee, currency, status, created_at
           ), new_transactions AS (
               INSERT INTO simulator.balance_transactions
                      (id, account, type, amount, fee, currency, source_id, charge_id, created_at)
               SELECT 'txn_sim_' || replace(gen_random_uuid()::text, '-', ''), $1, 'charge', amount, fee, currency,
                      id, id, created_at
                 FROM new_charges WHERE status = 'succeeded'
           )
           SELECT idempotency_key, created_at FROM new_charges""",
        account,
        [w.reference for w in candidates],
        [w.request.idempotency_key for w in candidates],
        [w.request.donation_id for w in candidates],
        [w.request.campaign for w in candidates],
        [w.request.payment_method for w in candidates],
        [w.request.amount.amount_minor for w in candidates],
        [w.request.amount.currency for w in candidates],
        [w.fee_minor for w in candidates],
        [w.status.value for w in candidates],
        [w.decline_code for w in candidates],
        [w.message for w in candidates],
        [orjson.dumps(dict(w.request.metadata)).decode() for w in candidates],
    )
    created_at = {row["idempotency_key"]: row["created_at"] for row in rows}
    taken = [key for key in first_by_key if key not in created_at]
    existing = {c.idempotency_key: c for c in await charges_by_keys(connection, account, taken)} if taken else {}
    results = []
    for write in writes:
        key = write.request.idempotency_key
        if key in created_at and first_by_key[key] is write:
            results.append(ChargeWritten(new_charge(write, created_at[key]), created=True))
        elif key in created_at:
            results.append(ChargeWritten(new_charge(first_by_key[key], created_at[key]), created=False))
        elif key in existing:
            results.append(ChargeWritten(existing[key], created=False))
        else:
            # ON CONFLICT waits for the conflicting transaction to commit, so its row is visible to this statement.
            raise RuntimeError(f"idempotency key {key!r} conflicted but no charge holds it")
    return results


def new_charge(write: ChargeWrite, created: datetime) -> RecordedCharge:
    request = write.request
    return RecordedCharge(
        reference=write.reference,
        idempotency_key=request.idempotency_key,
        donation_id=request.donation_id,
        campaign=request.campaign,
        payment_method=request.payment_method,
        amount=request.amount,
        fee=Money(write.fee_minor, request.amount.currency),
        status=write.status,
        decline_code=write.decline_code,
        message=write.message,
        created=created,
        amount_refunded=Money(0, request.amount.currency),
    )


async def charges_by_keys(connection: asyncpg.Connection, account: str, keys: Sequence[str]) -> list[RecordedCharge]:
    rows = await connection.fetch(
        f"SELECT {_CHARGE_COLUMNS} FROM simulator.charges c WHERE c.account = $1 AND c.idempotency_key = ANY($2)",
        account,
        list(keys),
    )
    return [_charge(row) for row in rows]


async def charge_by_reference(connection: asyncpg.Connection, account: str, reference: str) -> RecordedCharge | None:
    row = await connection.fetchrow(
        f"SELECT {_CHARGE_COLUMNS} FROM simulator.charges c WHERE c.account = $1 AND c.id = $2", account, reference
    )
    return None if row is None else _charge(row)


async def all_charges(connection: asyncpg.Connection, account: str) -> list[RecordedCharge]:
    rows = await connection.fetch(
        f"SELECT {_CHARGE_COLUMNS} FROM simulator.charges c WHERE c.account = $1 ORDER BY c.created_at, c.id",
        account,
    )
    return [_charge(row) for row in rows]


def charge_object(charge: RecordedCharge) -> dict[str, Any]:
    return {"payment_intent": charge.reference, "metadata": {"donation_id": charge.donation_id}}


async def locked_charge(connection: asyncpg.Connection, account: str, reference: str) -> RecordedCharge:
    await connection.execute(
        "SELECT 1 FROM simulator.charges WHERE account = $1 AND id = $2 FOR UPDATE", account, reference
    )
    charge = await charge_by_reference(connection, account, reference)
    if charge is None:
        raise SimulatorError(f"no charge {reference!r} on account {account!r}")
    return charge


async def resolve_pending(
    connection: asyncpg.Connection,
    account: str,
    reference: str,
    succeeded: bool,
    fee_minor_for: Callable[[Money], int],
) -> StoredEvent:
    """Settle a charge waiting for authentication: the donor completed it (succeeded) or gave up."""
    charge = await locked_charge(connection, account, reference)
    if charge.status is not ChargeRecordStatus.REQUIRES_ACTION:
        raise SimulatorError(f"charge {reference} has status {charge.status}, not requires_action")
    fee_minor = fee_minor_for(charge.amount)
    now = await connection.fetchval("SELECT clock_timestamp()")
    payment_intent: dict[str, Any] = {
        "id": reference,
        "object": "payment_intent",
        **webhooks.money_fields(charge.amount),
        **charge_object(charge),
    }
    if succeeded:
        await connection.execute(
            "UPDATE simulator.charges SET status = 'succeeded', fee = $2, message = NULL WHERE id = $1",
            reference,
            fee_minor,
        )
        movement = Movement("charge", charge.amount, fee_minor, reference, reference)
        await insert_balance_transactions(connection, account, [movement], now)
        payment_intent.update(status="succeeded", fee=fee_minor)
        event_type = webhooks.PAYMENT_SUCCEEDED
    else:
        code, message = "authentication_required", "The donor did not complete authentication."
        await connection.execute(
            "UPDATE simulator.charges SET status = 'declined', decline_code = $2, message = $3 WHERE id = $1",
            reference,
            code,
            message,
        )
        payment_intent.update(
            status="requires_payment_method", last_payment_error={"decline_code": code, "message": message}
        )
        event_type = webhooks.PAYMENT_FAILED
    event = new_event(new_id("evt"), event_type, now, payment_intent)
    await insert_events(connection, account, [event], now)
    return event
