"""The dashboard's chart: posted contributions per minute."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg


@dataclass(frozen=True, slots=True)
class MinuteCount:
    minute: datetime
    donations: int
    amount: int  # minor units, summed across currencies only when there is one


async def donations_per_minute(
    connection: asyncpg.Connection, *, minutes: int = 60, now: datetime | None = None
) -> list[MinuteCount]:
    """Posted contributions per minute over the last ``minutes`` minutes, oldest first, empty minutes included."""
    end = (now or datetime.now(UTC)).replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = end - timedelta(minutes=minutes)
    records = await connection.fetch(
        """SELECT date_trunc('minute', e.effective_at) AS minute, count(DISTINCT e.id) AS donations,
                  coalesce(-sum(p.amount), 0)::bigint AS amount
             FROM ledger.entries e
             JOIN ledger.postings p ON p.entry_id = e.id AND NOT p.pending AND p.amount < 0
             JOIN ledger.accounts a ON a.id = p.account_id AND starts_with(a.code, 'contributions:')
            WHERE e.effective_at >= $1 AND e.effective_at < $2
            GROUP BY 1""",
        start,
        end,
    )
    found = {r["minute"]: r for r in records}
    series = []
    for step in range(minutes):
        minute = start + timedelta(minutes=step)
        record = found.get(minute)
        series.append(MinuteCount(minute, record["donations"] if record else 0, record["amount"] if record else 0))
    return series
