"""The ledger's side: each entry's postings on the processor's clearing and fee accounts, and the opening clearing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from engine.finance.reconcile.model import LedgerItem, Window, json_object
from engine.finance.reconcile.subjects import entry_subject


@dataclass(frozen=True, slots=True)
class AccountPrefixes:
    """The processor's accounts, by code prefix (codes end with the currency): ``clearing:<p>:``, ``fees:<p>:``."""

    clearing: str
    fees: str


async def load_ledger_items(
    connection: asyncpg.Connection, processor: str, accounts: AccountPrefixes, window: Window
) -> list[LedgerItem]:
    rows = await connection.fetch(
        """SELECT e.id, e.reference, e.effective_at, e.metadata::text AS metadata, p.currency,
                  sum(p.amount) FILTER (WHERE starts_with(a.code, $1))::bigint AS clearing,
                  sum(p.amount) FILTER (WHERE starts_with(a.code, $2))::bigint AS fee
             FROM ledger.entries e
             JOIN ledger.postings p ON p.entry_id = e.id AND NOT p.pending
             JOIN ledger.accounts a ON a.id = p.account_id
            WHERE e.effective_at >= $3 AND e.effective_at < $4
              AND (starts_with(a.code, $1) OR starts_with(a.code, $2))
            GROUP BY e.id, p.currency
            ORDER BY e.id""",
        accounts.clearing,
        accounts.fees,
        window.read_from,
        window.read_to,
    )
    items = []
    for row in rows:
        metadata = json_object(row["metadata"])
        donation = metadata.get("donation")
        items.append(
            LedgerItem(
                row["id"],
                row["reference"],
                entry_subject(processor, row["reference"], metadata),
                row["currency"].strip(),
                row["clearing"] or 0,
                row["fee"] or 0,
                row["effective_at"],
                donation if isinstance(donation, str) else None,
            )
        )
    return items


async def opening_clearing(
    connection: asyncpg.Connection, accounts: AccountPrefixes, before: datetime
) -> dict[str, int]:
    rows = await connection.fetch(
        """SELECT p.currency, sum(p.amount)::bigint AS total
             FROM ledger.postings p
             JOIN ledger.accounts a ON a.id = p.account_id
             JOIN ledger.entries e ON e.id = p.entry_id
            WHERE starts_with(a.code, $1) AND NOT p.pending AND e.effective_at < $2
            GROUP BY p.currency""",
        accounts.clearing,
        before,
    )
    return {row["currency"].strip(): row["total"] for row in rows}
