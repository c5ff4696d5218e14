"""The dashboard's chart: posted contributions per minute, with their amounts kept apart by currency."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg


@dataclass(frozen=True, slots=True)
class MinuteCount:
    minute: datetime
    donations: int  # across currencies: a count, not money
    # Currency → posted contributions in its minor units. Amounts in different currencies are never added up.
    amounts: Mapping[str, int] = field(default_factory=dict)
    counts: Mapping[str, int] = field(default_factory=dict)  # currency → donations


async def donations_per_minute(
    connection: asyncpg.Connection, *, minutes: int = 60, now: datetime | None = None
) -> list[MinuteCount]:
    """Posted contributions per minute over the last ``minutes`` minutes, oldest first, empty minutes included."""
    end = (now or datetime.now(UTC)).replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = end - timedelta(minutes=minutes)
    records = await connection.fetch(
        """SELECT date_trunc('minute', e.effective_at) AS minute, p.currency, count(DISTINCT e.id) AS donations,
                  coalesce(-sum(p.amount), 0)::bigint AS amount
             FROM ledger.entries e
             JOIN ledger.postings p ON p.entry_id = e.id AND NOT p.pending AND p.amount < 0
             JOIN ledger.accounts a ON a.id = p.account_id AND starts_with(a.code, 'contributions:')
            WHERE e.effective_at >= $1 AND e.effective_at < $2
            GROUP BY 1, 2""",
        start,
        end,
    )
    amounts: dict[datetime, dict[str, int]] = {}
    counts: dict[datetime, dict[str, int]] = {}
    for record in records:
        currency = record["currency"].strip()
        amounts.setdefault(record["minute"], {})[currency] = record["amount"]
        counts.setdefault(record["minute"], {})[currency] = record["donations"]
    series = []
    for step in range(minutes):
        minute = start + timedelta(minutes=step)
        by_currency = counts.get(minute, {})
        series.append(MinuteCount(minute, sum(by_currency.values()), amounts.get(minute, {}), by_currency))
    return series


def currency_totals(series: list[MinuteCount]) -> dict[str, tuple[int, int]]:
    """Currency → (donations, amount in its minor units) over the whole series, in currency order."""
    totals: dict[str, tuple[int, int]] = {}
    for minute in series:
        for currency, amount in minute.amounts.items():
            donations, total = totals.get(currency, (0, 0))
            totals[currency] = (donations + minute.counts.get(currency, 0), total + amount)
    return dict(sorted(totals.items()))
