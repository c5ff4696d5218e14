"""Campaign days: per campaign and day (UTC), gross contributions, refunds, disputes, fees and net, from the ledger."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import asyncpg

from engine.finance.reports.report import Report, day_end, day_start

CAMPAIGN_DAY_COLUMNS = ("campaign", "day", "currency", "donations", "gross", "refunds", "disputes", "fees", "net")


async def campaign_days(
    connection: asyncpg.Connection,
    *,
    campaign: str | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
) -> Report:
    records = await connection.fetch(
        """WITH lines AS (
               SELECT coalesce(a.campaign, e.metadata->>'campaign', d.campaign) AS campaign,
                      (e.effective_at AT TIME ZONE 'UTC')::date AS day,
                      p.currency, split_part(a.code, ':', 1) AS family, a.type, p.amount, p.entry_id
                 FROM ledger.postings p
                 JOIN ledger.entries e ON e.id = p.entry_id
                 JOIN ledger.accounts a ON a.id = p.account_id
                 LEFT JOIN surge.donations d ON a.campaign IS NULL AND d.id = e.metadata->>'donation'
                WHERE NOT p.pending AND (a.campaign IS NOT NULL OR a.type = 'expense')
                  AND ($2::timestamptz IS NULL OR e.effective_at >= $2)
                  AND ($3::timestamptz IS NULL OR e.effective_at < $3))
           SELECT campaign, day, currency,
                  count(DISTINCT entry_id) FILTER (WHERE family = 'contributions' AND amount < 0) AS donations,
                  coalesce(-sum(amount) FILTER (WHERE family = 'contributions'), 0)::bigint AS gross,
                  coalesce(sum(amount) FILTER (WHERE family = 'refunds'), 0)::bigint AS refunds,
                  coalesce(sum(amount) FILTER (WHERE family = 'disputes'), 0)::bigint AS disputes,
                  coalesce(sum(amount) FILTER (WHERE type = 'expense'), 0)::bigint AS fees
             FROM lines
            WHERE campaign IS NOT NULL AND ($1::text IS NULL OR campaign = $1)
            GROUP BY campaign, day, currency
            ORDER BY campaign, day, currency""",
        campaign,
        day_start(date_from),
        day_end(date_to),
    )
    rows = []
    for r in records:
        row = dict(r)
        row["currency"] = row["currency"].strip()
        row["net"] = row["gross"] - row["refunds"] - row["disputes"] - row["fees"]
        rows.append(row)
    return Report(
        "campaign_days",
        CAMPAIGN_DAY_COLUMNS,
        rows,
        frozenset({"gross", "refunds", "disputes", "fees", "net"}),
        _campaign_totals(rows),
        {"campaign": campaign, "from": date_from, "to": date_to},
    )


def _campaign_totals(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Campaign → currency → summed columns."""
    totals: dict[str, Any] = {}
    for row in rows:
        line = totals.setdefault(row["campaign"], {}).setdefault(
            row["currency"], {"donations": 0, "gross": 0, "refunds": 0, "disputes": 0, "fees": 0, "net": 0}
        )
        for column in line:
            line[column] += row[column]
    return totals
