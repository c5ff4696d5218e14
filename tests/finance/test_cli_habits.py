"""The finance command line as finance staff use it: a daily reconciliation needs no arguments, --from alone runs to
now, read commands speak JSON, and every command's --help shows examples (issue 15)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from engine.cli import build_parser
from engine.finance.cli import window_edges
from tests.commands import run_cli
from tests.e2e.conftest import Surge, donation

NOW = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)
TODAY = datetime(2026, 12, 3, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (None, None, (TODAY - timedelta(days=1), TODAY)),  # yesterday, UTC
        (TODAY - timedelta(days=7), None, (TODAY - timedelta(days=7), NOW)),  # --from alone: until now
        (None, TODAY, (TODAY - timedelta(days=1), TODAY)),  # --to alone: the day before it
        (TODAY - timedelta(days=2), TODAY, (TODAY - timedelta(days=2), TODAY)),
    ],
)
def test_the_range_a_finance_command_covers(
    start: datetime | None, end: datetime | None, expected: tuple[datetime, datetime]
) -> None:
    assert window_edges(start, end, NOW) == expected


def test_yesterday_is_the_utc_day_whatever_the_callers_zone() -> None:
    # 01:30 in UTC+05:00 on the 4th is 20:30 UTC on the 3rd: yesterday is the 2nd.
    evening = datetime.fromisoformat("2026-12-04T01:30:00+05:00")
    assert window_edges(None, None, evening) == (TODAY - timedelta(days=1), TODAY)


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    """Every leaf command of the parser with its formatted help."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, (*path, name))
    return found or [(path, parser.format_help())]


def test_every_command_shows_examples_in_its_help() -> None:
    parser = build_parser()
    commands = _commands(parser)
    assert len(commands) >= 15
    missing = [" ".join(path) for path, text in commands if "examples:\n  surge " not in text]
    assert missing == []
    assert "exit codes:" in parser.format_help()


async def test_a_daily_reconciliation_needs_no_arguments(surge: Surge, database_url: str, tmp_path: Path) -> None:
    assert (await surge.donate(donation(2_500)))[0] == 201
    # No range: yesterday (UTC), against the only processor configured; today's donation is outside it.
    daily = await run_cli(database_url, tmp_path, "reconcile", "--json")
    assert daily.returncode == 0, daily.stderr
    run = orjson.loads(daily.stdout)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert (run["processor"], run["matched"], run["exceptions"]) == ("simulated", 0, [])
    assert (datetime.fromisoformat(run["from"]), datetime.fromisoformat(run["to"])) == (
        today - timedelta(days=1),
        today,
    )
    # --from alone runs to now: today's donation is matched.
    since = await run_cli(database_url, tmp_path, "reconcile", "--from", today.date().isoformat(), "--json")
    assert since.returncode == 0, since.stderr
    assert orjson.loads(since.stdout)["matched"] >= 1

    listing = await run_cli(database_url, tmp_path, "reconciliations", "list", "--json")
    runs = orjson.loads(listing.stdout)["data"]
    assert [r["id"] for r in runs] == [orjson.loads(since.stdout)["id"], run["id"]]
    shown = await run_cli(database_url, tmp_path, "reconciliations", "show", str(run["id"]), "--json")
    assert orjson.loads(shown.stdout)["id"] == run["id"]


async def test_read_commands_speak_json(surge: Surge, database_url: str, tmp_path: Path) -> None:
    assert (await surge.donate(donation(2_500)))[0] == 201
    check = orjson.loads((await run_cli(database_url, tmp_path, "ledger", "check", "--json")).stdout)
    assert check["ok"] is True and check["entries"] >= 1 and check["problems"] == []
    campaigns = orjson.loads((await run_cli(database_url, tmp_path, "campaigns", "list", "--json")).stdout)
    assert [c["slug"] for c in campaigns["data"]] == ["demo"]
    migrations = orjson.loads((await run_cli(database_url, tmp_path, "db", "status", "--json")).stdout)
    assert all(m["applied_at"] for m in migrations["data"]) and len(migrations["data"]) >= 10
    trial = orjson.loads((await run_cli(database_url, tmp_path, "report", "trial-balance", "--json")).stdout)
    same = orjson.loads((await run_cli(database_url, tmp_path, "report", "trial-balance", "--format", "json")).stdout)
    assert trial["data"] == same["data"] and any(row["account"] == "contributions:demo" for row in trial["data"])
    exceptions = await run_cli(database_url, tmp_path, "reconciliations", "exceptions", "--json")
    assert exceptions.returncode == 0, exceptions.stderr
    assert (orjson.loads(exceptions.stdout)["object"], orjson.loads(exceptions.stdout)["data"]) == ("report", [])


async def test_a_processor_that_is_not_configured_is_named_in_the_error(database_url: str, tmp_path: Path) -> None:
    cli = await run_cli(database_url, tmp_path, "reconcile", "--processor", "paypal")
    assert cli.returncode == 2
    assert "no processor 'paypal'; configured: simulated" in cli.stderr
