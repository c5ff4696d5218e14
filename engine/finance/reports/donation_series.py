"""The dashboard's charts: money through an account family (contributions, refunds, disputes) per minute, hour or
day over a chosen span, amounts kept apart by currency, and the pipeline's pace now."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import asyncpg


class Span(StrEnum):
    """What the range picker offers: a span and the bucket it is drawn in."""

    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"

    @property
    def bucket(self) -> tuple[str, timedelta, int]:
        """(date_trunc unit, bucket width, buckets)"""
        return {
            Span.HOUR: ("minute", timedelta(minutes=1), 60),
            Span.DAY: ("hour", timedelta(hours=1), 24),
            Span.WEEK: ("day", timedelta(days=1), 7),
            Span.MONTH: ("day", timedelta(days=1), 30),
        }[self]


@dataclass(frozen=True, slots=True)
class Bucket:
    start: datetime
    entries: int  # across currencies: a count, not money
    # Currency → the money in its minor units. Amounts in different currencies are never added up.
    amounts: Mapping[str, int] = field(default_factory=dict)
    counts: Mapping[str, int] = field(default_factory=dict)  # currency → entries


class Flow(StrEnum):
    """Which accounts a series reads, and on which side money moves into them."""

    CONTRIBUTIONS = "contributions:"  # credited by each donation
    REFUNDS = "refunds:"  # debited by each refund
    DISPUTES = "disputes:"  # debited when a dispute withdraws the money

    @property
    def credit(self) -> bool:
        return self is Flow.CONTRIBUTIONS


async def money_flows(
    connection: asyncpg.Connection, span: Span = Span.HOUR, *, now: datetime | None = None
) -> dict[Flow, list[Bucket]]:
    """Posted entries into each flow's accounts per bucket over ``span``, oldest first, empty buckets included — the
    three flows read in one pass over the span's entries."""
    unit, width, count = span.bucket
    moment = now or datetime.now(UTC)
    end = _truncate(moment, unit) + width
    start = end - width * count
    flows = list(Flow)
    records = await connection.fetch(
        """SELECT f.flow, date_trunc($3, e.effective_at, 'UTC') AS bucket, p.currency,
                  count(DISTINCT e.id) AS entries, coalesce(abs(sum(p.amount)), 0)::bigint AS amount
             FROM ledger.entries e
             JOIN ledger.postings p ON p.entry_id = e.id AND NOT p.pending
             JOIN ledger.accounts a ON a.id = p.account_id
             JOIN unnest($4::text[], $5::boolean[]) AS f(flow, credit)
               ON starts_with(a.code, f.flow) AND (p.amount < 0) = f.credit
            WHERE e.effective_at >= $1 AND e.effective_at < $2
            GROUP BY 1, 2, 3""",
        start,
        end,
        unit,
        [flow.value for flow in flows],
        [flow.credit for flow in flows],
    )
    amounts: dict[tuple[str, datetime], dict[str, int]] = {}
    counts: dict[tuple[str, datetime], dict[str, int]] = {}
    for record in records:
        key, currency = (record["flow"], record["bucket"]), record["currency"].strip()
        amounts.setdefault(key, {})[currency] = record["amount"]
        counts.setdefault(key, {})[currency] = record["entries"]
    series: dict[Flow, list[Bucket]] = {}
    for flow in flows:
        buckets = []
        for step in range(count):
            key = (flow.value, start + width * step)
            by_currency = counts.get(key, {})
            buckets.append(Bucket(key[1], sum(by_currency.values()), amounts.get(key, {}), by_currency))
        series[flow] = buckets
    return series


def _truncate(moment: datetime, unit: str) -> datetime:
    moment = moment.astimezone(UTC).replace(second=0, microsecond=0)
    if unit in ("hour", "day"):
        moment = moment.replace(minute=0)
    if unit == "day":
        moment = moment.replace(hour=0)
    return moment


def currency_totals(series: list[Bucket]) -> dict[str, tuple[int, int]]:
    """Currency → (entries, amount in its minor units) over the whole series, in currency order."""
    totals: dict[str, tuple[int, int]] = {}
    for bucket in series:
        for currency, amount in bucket.amounts.items():
            entries, total = totals.get(currency, (0, 0))
            totals[currency] = (entries + bucket.counts.get(currency, 0), total + amount)
    return dict(sorted(totals.items()))


@dataclass(frozen=True, slots=True)
class Pace:
    queued: int  # accepted, waiting for the processor's budget
    in_flight: int  # being charged or waiting for the processor's decision
    succeeded_last_minute: int  # donations charged in the last minute, all engine processes together

    @property
    def charges_per_second(self) -> float:
        return self.succeeded_last_minute / 60


async def pace(connection: asyncpg.Connection) -> Pace:
    """The durable queue now and the charges that succeeded over the last minute (from the database, so every
    engine process is counted; both read an index, not the tables)."""
    row = await connection.fetchrow(
        """SELECT count(*) FILTER (WHERE status = 'queued') AS queued,
                  count(*) FILTER (WHERE status IN ('charging', 'pending')) AS in_flight
             FROM surge.donations WHERE status IN ('queued', 'charging', 'pending')"""
    )
    charged = await connection.fetchval(
        "SELECT count(*) FROM ledger.entries WHERE effective_at >= now() - interval '1 minute' AND memo = 'donation'"
    )
    return Pace(row["queued"], row["in_flight"], charged)
