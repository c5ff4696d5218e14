"""Refcodes: per campaign, refcode (the donation page's ``?refcode=``) and currency, what the link brought in —
succeeded donations and their gross, refunds, disputes and net, and the declined attempts.

Read from the donations (a refcode is attribution, not accounting: the ledger does not carry it), only those with a
refcode, through the partial index on (campaign, refcode).
"""

from __future__ import annotations

from datetime import date

import asyncpg

from engine.finance.reports.report import Report, day_end, day_start

REFCODE_COLUMNS = ("campaign", "refcode", "currency", "donations", "gross", "refunds", "disputes", "net", "declined")
REFCODE_ROWS_MAX = 10_000


async def refcode_totals(
    connection: asyncpg.Connection,
    *,
    campaign: str | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
) -> Report:
    records = await connection.fetch(
        """SELECT campaign, refcode, currency,
                  count(*) FILTER (WHERE status = 'succeeded') AS donations,
                  coalesce(sum(amount_minor) FILTER (WHERE status = 'succeeded'), 0)::bigint AS gross,
                  coalesce(sum(refunded_minor) FILTER (WHERE status = 'succeeded'), 0)::bigint AS refunds,
                  coalesce(sum(disputed_minor) FILTER (WHERE status = 'succeeded'), 0)::bigint AS disputes,
                  count(*) FILTER (WHERE status = 'declined') AS declined
             FROM surge.donations
            WHERE refcode IS NOT NULL AND ($1::text IS NULL OR campaign = $1)
              AND ($2::timestamptz IS NULL OR created_at >= $2) AND ($3::timestamptz IS NULL OR created_at < $3)
            GROUP BY campaign, refcode, currency
            ORDER BY campaign, gross DESC, refcode
            LIMIT $4""",
        campaign,
        day_start(date_from),
        day_end(date_to),
        REFCODE_ROWS_MAX,
    )
    rows = []
    for record in records:
        row = dict(record)
        row["currency"] = row["currency"].strip()
        row["net"] = row["gross"] - row["refunds"] - row["disputes"]
        rows.append(row)
    return Report(
        "refcodes",
        REFCODE_COLUMNS,
        rows,
        frozenset({"gross", "refunds", "disputes", "net"}),
        {},
        {"campaign": campaign, "from": date_from, "to": date_to},
    )
