"""toolkit.times: the one time parser (instants need a zone; days are calendar dates)."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from engine.finance import cli_arguments
from toolkit.times import day_start, parse_day, parse_instant


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T12:00:00Z", datetime(2026, 3, 1, 12, tzinfo=UTC)),
        ("2026-03-01T12:00:00+00:00", datetime(2026, 3, 1, 12, tzinfo=UTC)),
        ("2026-03-01T14:30:00+02:00", datetime(2026, 3, 1, 14, 30, tzinfo=timezone(timedelta(hours=2)))),
        ("2026-03-01T12:00:00.250-05:00", datetime(2026, 3, 1, 17, 0, 0, 250_000, tzinfo=UTC)),
    ],
)
def test_instants_with_a_zone_are_read(text: str, expected: datetime) -> None:
    parsed = parse_instant(text)
    assert parsed == expected
    assert parsed.tzinfo is not None


@pytest.mark.parametrize(
    "text", ["2026-03-01T12:00:00", "2026-03-01", "yesterday", "", "2026-13-01T00:00:00Z", "12:00Z"]
)
def test_instants_without_a_zone_or_malformed_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_instant(text)


def test_non_strings_are_refused() -> None:
    for value in (None, 1_700_000_000, ["2026-03-01T00:00:00Z"]):
        with pytest.raises(ValueError):
            parse_instant(value)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            parse_day(value)  # type: ignore[arg-type]


def test_days() -> None:
    assert parse_day("2026-02-28") == date(2026, 2, 28)
    for text in ("2026-02-30", "2026-02-28T00:00:00Z", "28/02/2026", ""):
        with pytest.raises(ValueError):
            parse_day(text)
    assert day_start(date(2026, 2, 28)) == datetime(2026, 2, 28, tzinfo=UTC)


def test_the_finance_cli_reads_days_as_utc_days_and_needs_a_zone_on_times() -> None:
    assert cli_arguments.start_moment("2026-03-01") == datetime(2026, 3, 1, tzinfo=UTC)
    assert cli_arguments.end_moment("2026-03-31") == datetime(
        2026, 4, 1, tzinfo=UTC
    )  # inclusive: to the end of the day
    assert cli_arguments.start_moment("2026-03-01T06:00:00+01:00") == datetime(2026, 3, 1, 5, tzinfo=UTC)
    with pytest.raises(argparse.ArgumentTypeError, match="time zone"):
        cli_arguments.start_moment("2026-03-01T06:00:00")
    with pytest.raises(argparse.ArgumentTypeError):
        cli_arguments.utc_day("2026-03-01T06:00:00Z")
