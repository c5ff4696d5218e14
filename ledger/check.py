"""`surge ledger check`: prove on demand that every entry balances and every cached balance is the sum of postings.

The database already refuses unbalanced entries and edits to postings; this re-derives everything from the
postings, so that a bug, a manual edit with triggers disabled or a restored backup cannot go unnoticed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg


@dataclass
class CheckReport:
    entries: int = 0
    accounts: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def check_ledger(connection: asyncpg.Connection) -> CheckReport:
    report = CheckReport()
    # One snapshot for every query, so a concurrent writer cannot produce a false alarm.
    async with connection.transaction(isolation="repeatable_read", readonly=True):
        report.entries = await connection.fetchval("SELECT count(*) FROM ledger.entries")
        report.accounts = await connection.fetchval("SELECT count(*) FROM ledger.accounts")
        for row in await connection.fetch(
            """SELECT e.reference, p.currency, p.pending, sum(p.amount) AS total
                 FROM ledger.postings p JOIN ledger.entries e ON e.id = p.entry_id
                GROUP BY e.reference, p.currency, p.pending HAVING sum(p.amount) <> 0
                ORDER BY e.reference LIMIT 1000"""
        ):
            side = "pending" if row["pending"] else "posted"
            report.problems.append(
                f"entry {row['reference']} does not balance: {side} {row['currency']} postings sum to {row['total']}"
            )
        for row in await connection.fetch(
            """SELECT e.reference FROM ledger.entries e
                WHERE NOT EXISTS (SELECT 1 FROM ledger.postings p WHERE p.entry_id = e.id)
                ORDER BY e.id LIMIT 1000"""
        ):
            report.problems.append(f"entry {row['reference']} has no postings")
        for row in await connection.fetch(
            """SELECT a.code, b.posted, b.pending,
                      coalesce(s.posted, 0) AS sum_posted, coalesce(s.pending, 0) AS sum_pending
                 FROM ledger.accounts a
                 LEFT JOIN ledger.balances b ON b.account_id = a.id
                 LEFT JOIN (SELECT account_id,
                                   sum(amount) FILTER (WHERE NOT pending) AS posted,
                                   sum(amount) FILTER (WHERE pending) AS pending
                              FROM ledger.postings GROUP BY account_id) s ON s.account_id = a.id
                WHERE b.account_id IS NULL
                   OR b.posted <> coalesce(s.posted, 0) OR b.pending <> coalesce(s.pending, 0)
                ORDER BY a.code LIMIT 1000"""
        ):
            if row["posted"] is None:
                report.problems.append(f"account {row['code']} has no balance row")
            else:
                report.problems.append(
                    f"account {row['code']} balance posted={row['posted']} pending={row['pending']} but its "
                    f"postings sum to posted={row['sum_posted']} pending={row['sum_pending']}"
                )
    return report
