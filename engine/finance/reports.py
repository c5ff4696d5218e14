"""Finance reports: queries in, rows out — the same rows rendered as JSON (minor units) or CSV (decimal amounts).

- trial balance: every account's posted balance on its debit or credit side, now or as of a time;
- campaign days: per campaign and day (UTC), gross contributions, refunds, disputes, fees and net, from the ledger;
- donor aggregates: per campaign, election and donor, what counts toward the contribution limit;
- Schedule A: itemized receipts in the shape of FEC Form 3 Schedule A (line 11(a)(i), individuals) — every receipt
  of a donor whose election aggregate exceeds the itemization threshold, each with the aggregate through it.

Aggregates are net of refunds and disputed amounts, as the engine's limit aggregates are: a refunded contribution
is no longer a contribution. Fees are booked per processor; a fee belongs to a campaign through the donation its
entry names (metadata ``donation``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import asyncpg
import orjson

from ledger import reads
from ledger.currencies import format_minor

INFORMATION_REQUESTED = "INFORMATION REQUESTED"  # the FEC's wording when a donor did not give employer/occupation


@dataclass(frozen=True, slots=True)
class Report:
    name: str
    columns: tuple[str, ...]
    rows: list[dict[str, Any]]
    money_columns: frozenset[str] = frozenset()  # minor units in JSON, decimals in CSV (with the row's currency)
    totals: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "object": "report",
            "report": self.name,
            "parameters": {k: _plain(v) for k, v in self.parameters.items()},
            "columns": list(self.columns),
            "data": [{c: _plain(row.get(c)) for c in self.columns} for row in self.rows],
            "totals": self.totals,
        }

    def as_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow([self._cell(row, column) for column in self.columns])
        return buffer.getvalue()

    def _cell(self, row: Mapping[str, Any], column: str) -> str:
        value = row.get(column)
        if value is None:
            return ""
        if column in self.money_columns:
            return format_minor(value, row.get("currency") or "USD")
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(_plain(value))


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _day_start(day: date | None) -> datetime | None:
    return None if day is None else datetime.combine(day, time(0), UTC)


def _day_end(day: date | None) -> datetime | None:
    """The end of ``day`` (exclusive): report ranges name whole days, both inclusive."""
    return None if day is None else datetime.combine(day + timedelta(days=1), time(0), UTC)


# ---- trial balance -------------------------------------------------------------------------------------------------


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


# ---- campaign totals by day ----------------------------------------------------------------------------------------

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
        _day_start(date_from),
        _day_end(date_to),
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


# ---- donor aggregates ----------------------------------------------------------------------------------------------

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


# ---- FEC Form 3 Schedule A -----------------------------------------------------------------------------------------

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
        _day_start(date_from),
        _day_end(date_to),
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


# ---- the dashboard's chart -------------------------------------------------------------------------------------------


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
