"""``surge report …``: the finance reports (engine/finance/reports/catalog.py) as CSV or JSON, to a file or stdout.

surge report schedule-a --campaign smith-2026 --from 2026-01-01 --to 2026-03-31 --output schedule-a.csv
surge report trial-balance --as-of 2026-10-31 --json
"""

from __future__ import annotations

import argparse
from typing import Any

import asyncpg

from engine.database import run_with_pool
from engine.finance.cli_arguments import EXIT_OK, render_report, start_moment, utc_day
from engine.finance.reports.catalog import REPORTS, ReportQuery, build_report
from engine.settings import load_settings
from toolkit.cli_help import examples


def _report(name: str) -> Any:
    def command(args: argparse.Namespace) -> int:
        query = ReportQuery(
            campaign=getattr(args, "campaign", None),
            election=getattr(args, "election", None),
            date_from=getattr(args, "start", None),
            date_to=getattr(args, "end", None),
            as_of=getattr(args, "as_of", None),
            limit_minor=getattr(args, "limit", None),
            threshold_minor=getattr(args, "threshold", None),
        )

        async def work(pool: asyncpg.Pool) -> int:
            async with pool.acquire() as connection:
                report = await build_report(connection, name, query)
            render_report(report, args)
            return EXIT_OK

        return run_with_pool(load_settings(), work)

    return command


def register(commands: Any) -> None:
    """Add ``surge report`` and its reports to the ``surge`` parser's sub-commands."""
    report = commands.add_parser("report", help="finance reports (CSV, or JSON with --json)")
    kinds = report.add_subparsers(dest="report_command", required=True)

    def add(name: str, *lines: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = kinds.add_parser(name, help=REPORTS[name][0], **examples(*lines))
        parser.add_argument("--format", choices=["csv", "json"], default="csv")
        parser.add_argument("--json", action="store_true", help="same as --format json")
        parser.add_argument("--output", metavar="FILE", help="write here instead of standard output")
        parser.set_defaults(run=_report(name))
        return parser

    trial = add("trial-balance", "surge report trial-balance", "surge report trial-balance --as-of 2026-10-31 --json")
    trial.add_argument("--as-of", type=start_moment, help="date or ISO 8601 time with zone (default: now)")
    days = add(
        "campaign-days",
        "surge report campaign-days --campaign smith-2026 --from 2026-11-01 --to 2026-11-30 --output november.csv",
    )
    aggregates = add("donor-aggregates", "surge report donor-aggregates --campaign smith-2026 --election 2026-general")
    schedule = add(
        "schedule-a",
        "surge report schedule-a --campaign smith-2026 --from 2026-01-01 --to 2026-03-31 --output schedule-a.csv",
    )
    refcodes = add("refcodes", "surge report refcodes --campaign smith-2026 --from 2026-11-01 --to 2026-11-30 --json")
    for parser in (days, aggregates, schedule, refcodes):
        parser.add_argument("--campaign")
    for parser in (aggregates, schedule):
        parser.add_argument("--election")
        parser.add_argument("--limit", type=int, help="contribution limit, minor units (default: the campaign's)")
        parser.add_argument("--threshold", type=int, help="itemization threshold, minor units (default: campaign's)")
    for parser in (days, schedule, refcodes):
        parser.add_argument("--from", dest="start", type=utc_day, help="first UTC day, YYYY-MM-DD")
        parser.add_argument("--to", dest="end", type=utc_day, help="last UTC day (inclusive)")
