"""FEC Form 3 Schedule A (line 11(a)(i), individuals): the itemized receipts of donors over the threshold."""

from __future__ import annotations

from datetime import UTC, date
from typing import Any

import asyncpg
import orjson

from engine.finance.reports.report import Report, day_end, day_start
from ledger.currencies import format_minor

INFORMATION_REQUESTED = "INFORMATION REQUESTED"  # the FEC's wording when a donor did not give employer/occupation


SCHEDULE_A_COLUMNS = (
    "form_type",
    "entity_type",
    "contributor_last_name",
    "contributor_first_name",
    "contributor_street_1",
    "contributor_street_2",
    "contributor_city",
    "contributor_state",
    "contributor_zip",
    "election",
    "contribution_date",
    "contribution_amount",
    "contribution_aggregate",
    "contributor_employer",
    "contributor_occupation",
    "transaction_id",
    "campaign",
    "currency",
    "memo",
    "exceeds_limit",
)


async def schedule_a(
    connection: asyncpg.Connection,
    *,
    campaign: str | None = None,
    election: str | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    threshold_minor: int | None = None,
    limit_minor: int | None = None,
) -> Report:
    """Itemized receipts from individuals for the period ``[date_from, date_to]`` (UTC days, inclusive).

    A receipt is itemized when its donor's election-to-date aggregate at the end of the period exceeds the
    threshold (each campaign's ``itemization_threshold``, $200 by default, unless ``threshold_minor`` is given);
    then every receipt of that donor in the period is listed, as the FEC asks. The aggregate column is the
    election-to-date aggregate through that receipt, counting receipts before the period too. ``exceeds_limit``
    flags receipts that take the aggregate past the limit (each campaign's, or ``limit_minor``)."""
    records = await connection.fetch(
        """WITH receipts AS (
               SELECT d.id, d.campaign, d.election, d.donor_key, d.donor::text AS donor, d.amount_minor, d.currency,
                      d.refunded_minor, d.disputed_minor, d.settled_at,
                      c.itemization_threshold_minor, c.contribution_limit_minor,
                      sum(d.amount_minor - d.refunded_minor - d.disputed_minor) OVER (
                          PARTITION BY d.campaign, d.election, d.donor_key ORDER BY d.settled_at, d.id
                      )::bigint AS aggregate_through,
                      sum(d.amount_minor - d.refunded_minor - d.disputed_minor) OVER (
                          PARTITION BY d.campaign, d.election, d.donor_key
                      )::bigint AS aggregate_at_end
                 FROM surge.donations d
                 JOIN surge.campaigns c ON c.slug = d.campaign
                WHERE d.status = 'succeeded' AND d.settled_at IS NOT NULL
                  AND ($1::text IS NULL OR d.campaign = $1) AND ($2::text IS NULL OR d.election = $2)
                  AND ($4::timestamptz IS NULL OR d.settled_at < $4))
           SELECT * FROM receipts
            WHERE ($3::timestamptz IS NULL OR settled_at >= $3)
              AND aggregate_at_end > coalesce($5::bigint, itemization_threshold_minor)
            ORDER BY campaign, election, donor_key, settled_at, id""",
        campaign,
        election,
        day_start(date_from),
        day_end(date_to),
        threshold_minor,
    )
    rows = [_schedule_a_row(r, limit_minor) for r in records]
    totals: dict[str, Any] = {}
    for row in rows:
        line = totals.setdefault(row["currency"], {"receipts": 0, "amount": 0})
        line["receipts"] += 1
        line["amount"] += row["contribution_amount"]
    return Report(
        "schedule_a",
        SCHEDULE_A_COLUMNS,
        rows,
        frozenset({"contribution_amount", "contribution_aggregate"}),
        totals,
        {
            "campaign": campaign,
            "election": election,
            "from": date_from,
            "to": date_to,
            "threshold": threshold_minor,
            "limit": limit_minor,
        },
    )


def _schedule_a_row(r: asyncpg.Record, limit_minor: int | None) -> dict[str, Any]:
    donor = orjson.loads(r["donor"]) if r["donor"] else {}
    limit = limit_minor if limit_minor is not None else r["contribution_limit_minor"]
    currency = r["currency"].strip()
    memo = []
    if r["refunded_minor"]:
        memo.append(f"refunded {format_minor(r['refunded_minor'], currency)}")
    if r["disputed_minor"]:
        memo.append(f"disputed {format_minor(r['disputed_minor'], currency)}")
    return {
        "form_type": "SA11AI",
        "entity_type": "IND",
        "contributor_last_name": donor.get("last_name"),
        "contributor_first_name": donor.get("first_name"),
        "contributor_street_1": donor.get("address_line1"),
        "contributor_street_2": donor.get("address_line2"),
        "contributor_city": donor.get("city"),
        "contributor_state": donor.get("state"),
        "contributor_zip": donor.get("postal_code"),
        "election": r["election"],
        "contribution_date": r["settled_at"].astimezone(UTC).date(),
        "contribution_amount": r["amount_minor"],
        "contribution_aggregate": r["aggregate_through"],
        "contributor_employer": donor.get("employer") or INFORMATION_REQUESTED,
        "contributor_occupation": donor.get("occupation") or INFORMATION_REQUESTED,
        "transaction_id": r["id"],
        "campaign": r["campaign"],
        "currency": currency,
        "memo": "; ".join(memo),
        "exceeds_limit": r["aggregate_through"] > limit,
    }
