"""What the finance commands share: exit codes, reading dates and times from arguments, writing their output.

Dates name whole UTC days, both inclusive as an end (``--to 2026-03-31`` runs to the end of that day); a full
ISO 8601 time must carry its zone (``Z`` or ``+hh:mm``): one without is refused, not guessed.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date, datetime, timedelta
from typing import Any

import orjson

from engine.finance.reports.report import Report
from toolkit.times import day_start, parse_day, parse_instant

EXIT_OK = 0
EXIT_EXCEPTIONS_FOUND = 1
EXIT_USAGE = 2


def moment(value: str, *, end_of_day: bool) -> datetime:
    """A date (a whole UTC day: its start, or with ``end_of_day`` the next day's start) or an ISO 8601 time with a
    time zone (``toolkit.times``: a time without one is refused, not guessed)."""
    try:
        day = parse_day(value)
    except ValueError:
        pass
    else:
        return day_start(day + timedelta(days=1) if end_of_day else day)
    try:
        return parse_instant(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date or an ISO 8601 time with a time zone: {value!r}") from None


def start_moment(value: str) -> datetime:
    return moment(value, end_of_day=False)


def end_moment(value: str) -> datetime:
    return moment(value, end_of_day=True)


def utc_day(value: str) -> date:
    try:
        return parse_day(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def write_output(text: str, output: str | None) -> None:
    if output in (None, "-"):
        sys.stdout.write(text)
        return
    with open(output, "w", encoding="utf-8", newline="") as file:
        file.write(text)
    print(f"wrote {output}", file=sys.stderr)


def json_text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n"


def print_json(value: Any) -> None:
    sys.stdout.write(json_text(value))


def render_report(report: Report, args: argparse.Namespace) -> None:
    if args.format == "json" or args.json:
        write_output(json_text(report.as_json()), args.output)
    else:
        write_output(report.as_csv(), args.output)
