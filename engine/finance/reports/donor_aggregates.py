"""Donor aggregates: per campaign, election and donor, what counts toward the contribution limit."""

from __future__ import annotations

import asyncpg
import orjson

from engine.finance.reports.report import Report

DONOR_AGGREGATE_COLUMNS = (
    "campaign",
    "election",
    "donor_key",
    "last_name",
    "first_name",
    "city",
    "state",
    "postal_code",
    "currency",
    "contributions",
    "aggregate",
    "held",
    "limit",
    "remaining",
    "over_limit",
    "itemized",
)


async def donor_aggregates(
    connection: asyncpg.Connection,
    *,
    campaign: str | None = None,
    election: str | None = None,
    limit_minor: int | None = None,
    threshold_minor: int | None = None,
) -> Report:
    """Per donor and election: the posted aggregate, what is held for donations in flight, and the room left.

    ``limit_minor`` and ``threshold_minor`` override each campaign's own limit and itemization threshold (to see
    the report under another rule); by default each campaign's configuration applies."""
    records = await connection.fetch(
        """SELECT a.campaign, a.election, a.donor_key, a.posted_minor, a.held_minor, a.limit_minor, c.currency,
                  c.itemization_threshold_minor, latest.donor::text AS donor,
                  coalesce(stats.contributions, 0) AS contributions
             FROM surge.contribution_aggregates a
             JOIN surge.campaigns c ON c.slug = a.campaign
             LEFT JOIN LATERAL (
                  SELECT d.donor FROM surge.donations d
                   WHERE (d.campaign, d.election, d.donor_key) = (a.campaign, a.election, a.donor_key)
                   ORDER BY d.created_at DESC LIMIT 1) latest ON true
             LEFT JOIN LATERAL (
                  SELECT count(*) AS contributions FROM surge.donations d
                   WHERE (d.campaign, d.election, d.donor_key) = (a.campaign, a.election, a.donor_key)
                     AND d.status = 'succeeded') stats ON true
            WHERE ($1::text IS NULL OR a.campaign = $1) AND ($2::text IS NULL OR a.election = $2)
              AND (a.posted_minor > 0 OR a.held_minor > 0)
            ORDER BY a.campaign, a.election, a.posted_minor DESC, a.donor_key""",
        campaign,
        election,
    )
    rows = []
    for r in records:
        donor = orjson.loads(r["donor"]) if r["donor"] else {}
        limit = limit_minor if limit_minor is not None else r["limit_minor"]
        threshold = threshold_minor if threshold_minor is not None else r["itemization_threshold_minor"]
        rows.append(
            {
                "campaign": r["campaign"],
                "election": r["election"],
                "donor_key": r["donor_key"],
                "last_name": donor.get("last_name"),
                "first_name": donor.get("first_name"),
                "city": donor.get("city"),
                "state": donor.get("state"),
                "postal_code": donor.get("postal_code"),
                "currency": r["currency"].strip(),
                "contributions": r["contributions"],
                "aggregate": r["posted_minor"],
                "held": r["held_minor"],
                "limit": limit,
                "remaining": max(limit - r["posted_minor"] - r["held_minor"], 0),
                "over_limit": r["posted_minor"] > limit,
                "itemized": r["posted_minor"] > threshold,
            }
        )
    return Report(
        "donor_aggregates",
        DONOR_AGGREGATE_COLUMNS,
        rows,
        frozenset({"aggregate", "held", "limit", "remaining"}),
        {},
        {"campaign": campaign, "election": election, "limit": limit_minor, "threshold": threshold_minor},
    )
