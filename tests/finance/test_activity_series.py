"""The dashboard's activity: donations, refunds and disputes per minute, hour or day over a chosen span, amounts
kept apart by currency, and the pipeline's pace now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine import chart_of_accounts
from engine.finance.reports.donation_series import Flow, Span, money_flows, pace
from ledger.accounts import AccountDirectory
from ledger.entries import transfer
from ledger.money import Money
from ledger.posting import post_entries_or_raise
from tests.finance.conftest import Surge, donation
from tests.finance.test_dashboard_donations import page, sign_in

NOW = datetime(2026, 12, 3, 12, 30, 15, tzinfo=UTC)


async def book(surge: Surge, reference: str, debit: str, credit: str, amount: int, at: datetime) -> None:
    entry = transfer(reference, debit=debit, credit=credit, money=Money(amount, "USD"), effective_at=at)
    async with surge.pool.acquire() as connection, connection.transaction():
        await post_entries_or_raise(connection, AccountDirectory(), [entry])


@pytest.mark.parametrize(
    ("span", "buckets", "first", "index_of_gift"),
    [
        (Span.HOUR, 60, datetime(2026, 12, 3, 11, 31, tzinfo=UTC), 58),  # 12:29 is bucket 58
        (Span.DAY, 24, datetime(2026, 12, 2, 13, tzinfo=UTC), 23),
        (Span.WEEK, 7, datetime(2026, 11, 27, tzinfo=UTC), 6),
        (Span.MONTH, 30, datetime(2026, 11, 4, tzinfo=UTC), 29),
    ],
)
async def test_each_span_counts_money_into_its_buckets(
    surge: Surge, span: Span, buckets: int, first: datetime, index_of_gift: int
) -> None:
    clearing, campaign = chart_of_accounts.clearing("simulated", "USD"), "demo"
    await book(surge, "gift", clearing, chart_of_accounts.contributions(campaign), 2_500, NOW - timedelta(minutes=1))
    await book(surge, "old", clearing, chart_of_accounts.contributions(campaign), 9_999, NOW - timedelta(days=40))
    await book(surge, "refund", chart_of_accounts.refunds(campaign), clearing, 700, NOW - timedelta(minutes=1))
    async with surge.pool.acquire() as connection:
        flows = await money_flows(connection, span, now=NOW)
    donations, refunds, disputes = flows[Flow.CONTRIBUTIONS], flows[Flow.REFUNDS], flows[Flow.DISPUTES]
    assert len(donations) == buckets and donations[0].start == first
    assert [(i, b.entries, dict(b.amounts)) for i, b in enumerate(donations) if b.entries] == [
        (index_of_gift, 1, {"USD": 2_500})
    ]
    assert [(i, dict(b.amounts)) for i, b in enumerate(refunds) if b.entries] == [(index_of_gift, {"USD": 700})]
    assert all(b.entries == 0 for b in disputes)


async def test_the_dashboard_picks_a_range_and_shows_the_pace(surge: Surge) -> None:
    for amount in (1_000, 2_000):
        assert (await surge.donate(donation(amount)))[0] == 201
    status, _ = await surge.donate(donation(3_000, "pm_card_authenticationRequired"))
    assert status == 202
    async with surge.pool.acquire() as connection:
        now = await pace(connection)
    assert (now.queued + now.in_flight, now.succeeded_last_minute) == (1, 2)
    cookie = await sign_in(surge)
    hour = await page(surge, "/dashboard", cookie)
    assert 'aria-current="page">hour' in hour and "Donations per minute, last hour" in hour
    assert "processor rate over the last minute: <strong>0.0</strong>" in hour  # 2 in a minute rounds to 0.0/s
    day = await page(surge, "/dashboard", cookie, range="day")
    assert "Donations per hour, last day" in day and 'id="amount-chart-usd"' in day and "30.00 USD" in day
    assert "Donations per minute" in await page(surge, "/dashboard", cookie, range="fortnight")  # the default
