"""Disputes: opened on a succeeded charge (withdrawing the disputed amount and the dispute fee) and closed won or
lost. Rare, one transaction each.
"""

from __future__ import annotations

import asyncpg

from adapters.simulated import webhooks
from adapters.simulated.record import ChargeRecordStatus, SimulatorError
from adapters.simulated.store.balance import Movement, insert_balance_transactions
from adapters.simulated.store.charges import charge_object, locked_charge
from adapters.simulated.store.events import StoredEvent, insert_events, new_event, new_id
from ledger.money import Money


async def create_dispute(
    connection: asyncpg.Connection, account: str, reference: str, amount: Money | None, fee_minor: int
) -> StoredEvent:
    """Open a dispute on a succeeded charge: withdraw the disputed amount plus the dispute fee."""
    charge = await locked_charge(connection, account, reference)
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
    movement = Movement("dispute", -amount, fee_minor, dispute_id, reference)
    await insert_balance_transactions(connection, account, [movement], now)
    dispute = {
        "id": dispute_id,
        "object": "dispute",
        **webhooks.money_fields(amount),
        "fee": fee_minor,
        "status": "needs_response",
        "reason": "fraudulent",
        **charge_object(charge),
    }
    event = new_event(event_id, webhooks.DISPUTE_CREATED, now, dispute)
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
        movement = Movement("dispute", amount, 0, dispute_id, row["charge_id"])
        await insert_balance_transactions(connection, account, [movement], now)
    dispute = {
        "id": dispute_id,
        "object": "dispute",
        **webhooks.money_fields(amount),
        "status": status,
        "payment_intent": row["charge_id"],
        "metadata": {"donation_id": row["donation_id"]},
    }
    event = new_event(new_id("evt"), webhooks.DISPUTE_CLOSED, now, dispute)
    await insert_events(connection, account, [event], now)
    return event
