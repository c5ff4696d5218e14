"""The simulated processor's record in PostgreSQL (schema ``simulator``, migration 0003): reads and writes.

Charges and refunds are the hot path: they are written through a group committer, many per transaction, with
set-based statements. Idempotency keys are unique per account in the database, so concurrent charges with one key,
from one process or several, make one row; the loser of a race reads the winner's row. Refunds lock their charges
(in id order, so concurrent batches cannot deadlock) before reading what was already refunded. Disputes, payouts
and pending resolutions are rare and take one transaction each.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from adapters.base import (
    BalanceTransaction,
    BalanceTransactionType,
    ChargeRequest,
    RefundRequest,
    RefundResult,
    RefundStatus,
)
from adapters.simulated import webhooks
from adapters.simulated.record import (
    ChargeRecordStatus,
    RecordedCharge,
    RecordedRefund,
    SimulatorError,
)
from ledger.money import Money

IDEMPOTENCY_MISMATCH_MESSAGE = (
    "Keys for idempotent requests can only be used with the same parameters they were first used with. "
    "Try using a key other than '{key}' if you meant to execute a different request."
)


def new_id(prefix: str) -> str:
    # Random, never from the seeded generator: two processes with one seed must not mint the same ids.
    return f"{prefix}_sim_{secrets.token_hex(12)}"


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: str
    type: str
    object_id: str  # the refund, dispute, payout or charge the event is about
    payload: bytes


# ---- charges ----------------------------------------------------------------------------------------------------


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
            results.append(ChargeWritten(_new_charge(write, created_at[key]), created=True))
        elif key in created_at:
            results.append(ChargeWritten(_new_charge(first_by_key[key], created_at[key]), created=False))
        elif key in existing:
            results.append(ChargeWritten(existing[key], created=False))
        else:
            # ON CONFLICT waits for the conflicting transaction to commit, so its row is visible to this statement.
            raise RuntimeError(f"idempotency key {key!r} conflicted but no charge holds it")
    return results


def _new_charge(write: ChargeWrite, created: datetime) -> RecordedCharge:
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


# ---- refunds ----------------------------------------------------------------------------------------------------


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
        [_Movement("refund", -w.request.amount, 0, w.reference, w.request.processor_reference) for w in writes],
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
            },
        }
        events.append(_event(write.event_id, webhooks.REFUND_CREATED, now, refund))
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


# ---- balance transactions and events ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Movement:
    type: str
    amount: Money
    fee_minor: int
    source_id: str
    charge_id: str | None


async def insert_balance_transactions(
    connection: asyncpg.Connection, account: str, movements: Sequence[_Movement], now: datetime
) -> None:
    await connection.execute(
        """INSERT INTO simulator.balance_transactions
               (id, account, type, amount, fee, currency, source_id, charge_id, created_at)
           SELECT m.id, $1, m.type, m.amount, m.fee, m.currency, m.source_id, m.charge_id, $8
             FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[], $7::text[], $9::text[])
                  AS m(id, type, amount, fee, currency, source_id, charge_id)""",
        account,
        [new_id("txn") for _ in movements],
        [m.type for m in movements],
        [m.amount.amount_minor for m in movements],
        [m.fee_minor for m in movements],
        [m.amount.currency for m in movements],
        [m.source_id for m in movements],
        now,
        [m.charge_id for m in movements],
    )


async def balance_transactions(
    connection: asyncpg.Connection, account: str, created_from: datetime, created_to: datetime
) -> list[BalanceTransaction]:
    rows = await connection.fetch(
        """SELECT t.id, t.type, t.amount, t.fee, t.currency, t.source_id, t.created_at, c.donation_id
             FROM simulator.balance_transactions t LEFT JOIN simulator.charges c ON c.id = t.charge_id
            WHERE t.account = $1 AND t.created_at >= $2 AND t.created_at < $3
            ORDER BY t.created_at, t.id""",
        account,
        created_from,
        created_to,
    )
    return [
        BalanceTransaction(
            id=row["id"],
            type=BalanceTransactionType(row["type"]),
            amount=Money(row["amount"], row["currency"]),
            fee=Money(row["fee"], row["currency"]),
            created=row["created_at"],
            source_reference=row["source_id"],
            donation_id=row["donation_id"],
        )
        for row in rows
    ]


def _event(event_id: str, event_type: str, now: datetime, data_object: Mapping[str, Any]) -> StoredEvent:
    payload = webhooks.event_payload(event_id, event_type, now, data_object)
    return StoredEvent(event_id, event_type, data_object["id"], payload)


async def insert_events(
    connection: asyncpg.Connection, account: str, events: Sequence[StoredEvent], now: datetime
) -> None:
    await connection.execute(
        """INSERT INTO simulator.events (id, account, type, object_id, payload, created_at)
           SELECT e.id, $1, e.type, e.object_id, e.payload, $5
             FROM unnest($2::text[], $3::text[], $4::text[], $6::text[]) AS e(id, type, payload, object_id)""",
        account,
        [e.id for e in events],
        [e.type for e in events],
        [e.payload.decode() for e in events],
        now,
        [e.object_id for e in events],
    )


async def stored_events(connection: asyncpg.Connection, account: str, since: datetime | None) -> list[StoredEvent]:
    rows = await connection.fetch(
        """SELECT id, type, object_id, payload FROM simulator.events
            WHERE account = $1 AND ($2::timestamptz IS NULL OR created_at >= $2) ORDER BY created_at, id""",
        account,
        since,
    )
    return [_stored_event(row) for row in rows]


async def stored_event(connection: asyncpg.Connection, account: str, event_id: str) -> StoredEvent | None:
    row = await connection.fetchrow(
        "SELECT id, type, object_id, payload FROM simulator.events WHERE account = $1 AND id = $2", account, event_id
    )
    return None if row is None else _stored_event(row)


def _stored_event(row: asyncpg.Record) -> StoredEvent:
    return StoredEvent(row["id"], row["type"], row["object_id"], row["payload"].encode())


# ---- disputes, payouts and pending charges ------------------------------------------------------------------------


def _charge_object(charge: RecordedCharge) -> dict[str, Any]:
    return {"payment_intent": charge.reference, "metadata": {"donation_id": charge.donation_id}}


async def _locked_charge(connection: asyncpg.Connection, account: str, reference: str) -> RecordedCharge:
    await connection.execute(
        "SELECT 1 FROM simulator.charges WHERE account = $1 AND id = $2 FOR UPDATE", account, reference
    )
    charge = await charge_by_reference(connection, account, reference)
    if charge is None:
        raise SimulatorError(f"no charge {reference!r} on account {account!r}")
    return charge


async def create_dispute(
    connection: asyncpg.Connection, account: str, reference: str, amount: Money | None, fee_minor: int
) -> StoredEvent:
    """Open a dispute on a succeeded charge: withdraw the disputed amount plus the dispute fee."""
    charge = await _locked_charge(connection, account, reference)
    if charge.status is not ChargeRecordStatus.SUCCEEDED:
        raise SimulatorError(f"charge {reference} has status {charge.status}: only succeeded charges are disputed")
    if await connection.fetchval("SELECT EXISTS (SELECT 1 FROM simulator.disputes WHERE charge_id = $1)", reference):
        raise SimulatorError(f"charge {reference} is already disputed")
    disputable = charge.amount - charge.amount_refunded
    amount = disputable if amount is None else amount
    if amount.currency != disputable.currency or not 0 < amount.amount_minor <= disputable.amount_minor:
        raise SimulatorError(f"dispute amount {amount} must be 1 to {disputable.amount_minor} {disputable.currency}")
    if fee_minor < 0:
        raise SimulatorError(f"dispute fee must be at least 0, got {fee_minor}")
    dispute_id, event_id = new_id("dp"), new_id("evt")
    now = await connection.fetchval("SELECT clock_timestamp()")
    await connection.execute(
        """INSERT INTO simulator.disputes (id, account, charge_id, amount, currency, fee, status, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, 'needs_response', $7)""",
        dispute_id,
        account,
        reference,
        amount.amount_minor,
        amount.currency,
        fee_minor,
        now,
    )
    movement = _Movement("dispute", -amount, fee_minor, dispute_id, reference)
    await insert_balance_transactions(connection, account, [movement], now)
    dispute = {
        "id": dispute_id,
        "object": "dispute",
        **webhooks.money_fields(amount),
        "fee": fee_minor,
        "status": "needs_response",
        "reason": "fraudulent",
        **_charge_object(charge),
    }
    event = _event(event_id, webhooks.DISPUTE_CREATED, now, dispute)
    await insert_events(connection, account, [event], now)
    return event


async def close_dispute(connection: asyncpg.Connection, account: str, dispute_id: str, won: bool) -> StoredEvent:
    """Close an open dispute; a won dispute reinstates the disputed amount (the dispute fee is not returned)."""
    row = await connection.fetchrow(
        """SELECT d.charge_id, d.amount, d.currency, d.status, c.donation_id
             FROM simulator.disputes d JOIN simulator.charges c ON c.id = d.charge_id
            WHERE d.account = $1 AND d.id = $2 FOR UPDATE OF d""",
        account,
        dispute_id,
    )
    if row is None:
        raise SimulatorError(f"no dispute {dispute_id!r} on account {account!r}")
    if row["status"] != "needs_response":
        raise SimulatorError(f"dispute {dispute_id} is closed already ({row['status']})")
    status = "won" if won else "lost"
    now = await connection.fetchval("SELECT clock_timestamp()")
    await connection.execute(
        "UPDATE simulator.disputes SET status = $2, closed_at = $3 WHERE id = $1", dispute_id, status, now
    )
    amount = Money(row["amount"], row["currency"])
    if won:
        movement = _Movement("dispute", amount, 0, dispute_id, row["charge_id"])
        await insert_balance_transactions(connection, account, [movement], now)
    dispute = {
        "id": dispute_id,
        "object": "dispute",
        **webhooks.money_fields(amount),
        "status": status,
        "payment_intent": row["charge_id"],
        "metadata": {"donation_id": row["donation_id"]},
    }
    event = _event(new_id("evt"), webhooks.DISPUTE_CLOSED, now, dispute)
    await insert_events(connection, account, [event], now)
    return event


async def pay_out(connection: asyncpg.Connection, account: str, currency: str) -> StoredEvent | None:
    """Pay out the whole available balance in ``currency``; None when there is nothing to pay out."""
    # Two payouts at once would both see the same balance: serialise them per account.
    await connection.execute("SELECT pg_advisory_xact_lock(hashtext('simulator.payout:' || $1))", account)
    balance_minor = await connection.fetchval(
        """SELECT coalesce(sum(amount - fee), 0)::bigint FROM simulator.balance_transactions
            WHERE account = $1 AND currency = $2""",
        account,
        currency,
    )
    if balance_minor <= 0:
        return None
    payout_id, amount = new_id("po"), Money(balance_minor, currency)
    now = await connection.fetchval("SELECT clock_timestamp()")
    await connection.execute(
        "INSERT INTO simulator.payouts (id, account, amount, currency, created_at) VALUES ($1, $2, $3, $4, $5)",
        payout_id,
        account,
        balance_minor,
        currency,
        now,
    )
    await insert_balance_transactions(connection, account, [_Movement("payout", -amount, 0, payout_id, None)], now)
    payout = {"id": payout_id, "object": "payout", **webhooks.money_fields(amount), "status": "paid"}
    event = _event(new_id("evt"), webhooks.PAYOUT_PAID, now, payout)
    await insert_events(connection, account, [event], now)
    return event


async def resolve_pending(
    connection: asyncpg.Connection,
    account: str,
    reference: str,
    succeeded: bool,
    fee_minor_for: Callable[[Money], int],
) -> StoredEvent:
    """Settle a charge waiting for authentication: the donor completed it (succeeded) or gave up."""
    charge = await _locked_charge(connection, account, reference)
    if charge.status is not ChargeRecordStatus.REQUIRES_ACTION:
        raise SimulatorError(f"charge {reference} has status {charge.status}, not requires_action")
    fee_minor = fee_minor_for(charge.amount)
    now = await connection.fetchval("SELECT clock_timestamp()")
    payment_intent: dict[str, Any] = {
        "id": reference,
        "object": "payment_intent",
        **webhooks.money_fields(charge.amount),
        **_charge_object(charge),
    }
    if succeeded:
        await connection.execute(
            "UPDATE simulator.charges SET status = 'succeeded', fee = $2, message = NULL WHERE id = $1",
            reference,
            fee_minor,
        )
        movement = _Movement("charge", charge.amount, fee_minor, reference, reference)
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
    event = _event(new_id("evt"), event_type, now, payment_intent)
    await insert_events(connection, account, [event], now)
    return event
