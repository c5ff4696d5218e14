"""Trial balance: every account's posted balance on its debit or credit side, now or as of a time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from engine.finance.reports.report import Report
from ledger import reads


async def trial_balance(connection: asyncpg.Connection, as_of: datetime | None = None) -> Report:
    rows: list[dict[str, Any]]
    if as_of is None:
        lines = await reads.trial_balance(connection)
        rows = [
            {"account": x.account, "type": x.type.value, "currency": x.currency, "debit": x.debit, "credit": x.credit}
            for x in lines
        ]
    else:
        records = await connection.fetch(
            """SELECT a.code, a.type, a.currency,
                      coalesce(sum(p.amount) FILTER (WHERE e.effective_at <= $1 AND NOT p.pending), 0)::bigint AS posted
                 FROM ledger.accounts a
                 LEFT JOIN ledger.postings p ON p.account_id = a.id
                 LEFT JOIN ledger.entries e ON e.id = p.entry_id
                GROUP BY a.id ORDER BY a.currency, a.code""",
            as_of,
        )
        rows = [
            {
                "account": r["code"],
                "type": r["type"],
                "currency": r["currency"].strip(),
                "debit": max(r["posted"], 0),
                "credit": max(-r["posted"], 0),
            }
            for r in records
        ]
    totals: dict[str, Any] = {}
    for row in rows:
        line = totals.setdefault(row["currency"], {"debit": 0, "credit": 0})
        line["debit"] += row["debit"]
        line["credit"] += row["credit"]
    for line in totals.values():
        line["balanced"] = line["debit"] == line["credit"]
    return Report(
        "trial_balance",
        ("account", "type", "currency", "debit", "credit"),
        rows,
        frozenset({"debit", "credit"}),
        totals,
        {"as_of": as_of},
    )
