"""Reading the ledger: balances (now and as of a past time), an account's entries, an entry's postings, the trial
balance."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ledger.accounts import AccountType


class AccountNotFoundError(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class Balance:
    account: str
    currency: str
    posted: int  # signed minor units: debits positive
    pending: int
    version: int | None  # None for a balance computed as of a past time


@dataclass(frozen=True, slots=True)
class AccountEntry:
    entry_id: int
    reference: str
    kind: str
    effective_at: datetime
    memo: str | None
    amount: int  # this account's net posted amount in the entry
    pending_amount: int


@dataclass(frozen=True, slots=True)
class EntryPosting:
    account: str
    currency: str
    amount: int  # signed minor units: debits positive
    pending: bool


@dataclass(frozen=True, slots=True)
class TrialBalanceLine:
    account: str
    type: AccountType
    currency: str
    debit: int
    credit: int


async def balance(connection: asyncpg.Connection, account: str) -> Balance:
    row = await connection.fetchrow(
        """SELECT a.currency, b.posted, b.pending, b.version
             FROM ledger.accounts a JOIN ledger.balances b ON b.account_id = a.id WHERE a.code = $1""",
        account,
    )
    if row is None:
        raise AccountNotFoundError(account)
    return Balance(account, row["currency"], row["posted"], row["pending"], row["version"])


async def balance_as_of(connection: asyncpg.Connection, account: str, at: datetime) -> Balance:
    """The balance from postings whose entries took effect at or before ``at``."""
    row = await connection.fetchrow(
        """SELECT a.currency,
                  coalesce(sum(p.amount) FILTER (WHERE NOT p.pending), 0)::bigint AS posted,
                  coalesce(sum(p.amount) FILTER (WHERE p.pending), 0)::bigint AS pending
             FROM ledger.accounts a
             LEFT JOIN ledger.postings p ON p.account_id = a.id
                   AND p.entry_id IN (SELECT id FROM ledger.entries WHERE effective_at <= $2)
            WHERE a.code = $1
            GROUP BY a.currency""",
        account,
        at,
    )
    if row is None:
        raise AccountNotFoundError(account)
    return Balance(account, row["currency"], row["posted"], row["pending"], None)


async def account_entries(
    connection: asyncpg.Connection, account: str, *, limit: int = 100, before_entry_id: int | None = None
) -> list[AccountEntry]:
    """Newest first; pass the last ``entry_id`` seen as ``before_entry_id`` for the next page."""
    account_id = await connection.fetchval("SELECT id FROM ledger.accounts WHERE code = $1", account)
    if account_id is None:
        raise AccountNotFoundError(account)
    rows = await connection.fetch(
        """SELECT e.id, e.reference, e.kind, e.effective_at, e.memo,
                  coalesce(sum(p.amount) FILTER (WHERE NOT p.pending), 0)::bigint AS amount,
                  coalesce(sum(p.amount) FILTER (WHERE p.pending), 0)::bigint AS pending_amount
             FROM ledger.postings p JOIN ledger.entries e ON e.id = p.entry_id
            WHERE p.account_id = $1 AND ($2::bigint IS NULL OR p.entry_id < $2)
            GROUP BY e.id
            ORDER BY e.id DESC
            LIMIT $3""",
        account_id,
        before_entry_id,
        limit,
    )
    return [
        AccountEntry(r["id"], r["reference"], r["kind"], r["effective_at"], r["memo"], r["amount"], r["pending_amount"])
        for r in rows
    ]


async def entry_postings(connection: asyncpg.Connection, reference: str) -> list[EntryPosting]:
    """The postings of the entry with ``reference``, in the order written; empty when there is no such entry."""
    rows = await connection.fetch(
        """SELECT a.code, p.currency, p.amount, p.pending
             FROM ledger.entries e
             JOIN ledger.postings p ON p.entry_id = e.id
             JOIN ledger.accounts a ON a.id = p.account_id
            WHERE e.reference = $1
            ORDER BY p.id""",
        reference,
    )
    return [EntryPosting(r["code"], r["currency"].strip(), r["amount"], r["pending"]) for r in rows]


async def trial_balance(connection: asyncpg.Connection, as_of: datetime | None = None) -> list[TrialBalanceLine]:
    """Every account's posted balance on the debit or credit side; per currency the two sides are equal.

    Now: the cached balances (``ledger.balances``). ``as_of``: summed from the postings of the entries effective by
    then (pending postings excluded), every account listed, zero or not."""
    if as_of is None:
        rows = await connection.fetch(
            """SELECT a.code, a.type, a.currency, b.posted
                 FROM ledger.accounts a JOIN ledger.balances b ON b.account_id = a.id
                ORDER BY a.currency, a.code"""
        )
    else:
        rows = await connection.fetch(
            """SELECT a.code, a.type, a.currency,
                      coalesce(sum(p.amount) FILTER (WHERE e.effective_at <= $1 AND NOT p.pending), 0)::bigint AS posted
                 FROM ledger.accounts a
                 LEFT JOIN ledger.postings p ON p.account_id = a.id
                 LEFT JOIN ledger.entries e ON e.id = p.entry_id
                GROUP BY a.id ORDER BY a.currency, a.code""",
            as_of,
        )
    return [
        TrialBalanceLine(
            r["code"], AccountType(r["type"]), r["currency"].strip(), max(r["posted"], 0), max(-r["posted"], 0)
        )
        for r in rows
    ]


def trial_balance_totals(lines: list[TrialBalanceLine]) -> dict[str, tuple[int, int]]:
    """Currency → (total debits, total credits)."""
    totals: dict[str, tuple[int, int]] = {}
    for line in lines:
        debit, credit = totals.get(line.currency, (0, 0))
        totals[line.currency] = (debit + line.debit, credit + line.credit)
    return totals
