"""The account's balance: balance transactions (every movement of money, ``simulator.balance_transactions``) and
payouts of the whole balance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from adapters.base import BalanceTransaction, BalanceTransactionType
from adapters.simulated import webhooks
from adapters.simulated.store.events import StoredEvent, insert_events, new_event, new_id
from ledger.money import Money


@dataclass(frozen=True, slots=True)
class Movement:
    type: str
    amount: Money
    fee_minor: int
    source_id: str
    charge_id: str | None


async def insert_balance_transactions(
    connection: asyncpg.Connection, account: str, movements: Sequence[Movement], now: datetime
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
    await insert_balance_transactions(connection, account, [Movement("payout", -amount, 0, payout_id, None)], now)
    payout = {"id": payout_id, "object": "payout", **webhooks.money_fields(amount), "status": "paid"}
    event = new_event(new_id("evt"), webhooks.PAYOUT_PAID, now, payout)
    await insert_events(connection, account, [event], now)
    return event
