"""Trial balance: every account's posted balance on its debit or credit side, now or as of a time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from engine.finance.reports.report import Report
from ledger import reads


async def trial_balance(connection: asyncpg.Connection, as_of: datetime | None = None) -> Report:
    lines = await reads.trial_balance(connection, as_of)
    rows: list[dict[str, Any]] = [
        {"account": x.account, "type": x.type.value, "currency": x.currency, "debit": x.debit, "credit": x.credit}
        for x in lines
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
