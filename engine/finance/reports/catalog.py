"""Every finance report by name, built from one set of parameters: the dashboard's export form, the API's
``/v1/reports/<name>`` and ``surge report <name>`` all ask here, so a report means the same thing everywhere."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

from engine.finance.reports.campaign_days import campaign_days
from engine.finance.reports.donor_aggregates import donor_aggregates
from engine.finance.reports.refcodes import refcode_totals
from engine.finance.reports.report import Report
from engine.finance.reports.schedule_a import schedule_a
from engine.finance.reports.trial_balance import trial_balance


@dataclass(frozen=True, slots=True)
class ReportQuery:
    campaign: str | None = None
    election: str | None = None
    date_from: date | None = None
    date_to: date | None = None  # inclusive
    as_of: datetime | None = None
    limit_minor: int | None = None
    threshold_minor: int | None = None


async def _trial_balance(connection: asyncpg.Connection, query: ReportQuery) -> Report:
    return await trial_balance(connection, query.as_of)


async def _campaign_days(connection: asyncpg.Connection, query: ReportQuery) -> Report:
    return await campaign_days(connection, campaign=query.campaign, date_from=query.date_from, date_to=query.date_to)


async def _refcodes(connection: asyncpg.Connection, query: ReportQuery) -> Report:
    return await refcode_totals(connection, campaign=query.campaign, date_from=query.date_from, date_to=query.date_to)


async def _donor_aggregates(connection: asyncpg.Connection, query: ReportQuery) -> Report:
    return await donor_aggregates(
        connection,
        campaign=query.campaign,
        election=query.election,
        limit_minor=query.limit_minor,
        threshold_minor=query.threshold_minor,
    )


async def _schedule_a(connection: asyncpg.Connection, query: ReportQuery) -> Report:
    return await schedule_a(
        connection,
        campaign=query.campaign,
        election=query.election,
        date_from=query.date_from,
        date_to=query.date_to,
        threshold_minor=query.threshold_minor,
        limit_minor=query.limit_minor,
    )


REPORTS: dict[str, tuple[str, Callable[[asyncpg.Connection, ReportQuery], Awaitable[Report]]]] = {
    "trial-balance": ("every account's balance, debits and credits", _trial_balance),
    "campaign-days": ("per campaign and day: gross, refunds, disputes, fees, net", _campaign_days),
    "donor-aggregates": ("per donor and election: aggregate, held, limit, room", _donor_aggregates),
    "refcodes": ("per campaign and refcode: donations, gross, refunds, disputes, net, declines", _refcodes),
    "schedule-a": ("itemized receipts, FEC Form 3 Schedule A shape", _schedule_a),
}


async def build_report(connection: asyncpg.Connection, name: str, query: ReportQuery) -> Report:
    """Raises KeyError for a report that does not exist."""
    return await REPORTS[name][1](connection, query)
