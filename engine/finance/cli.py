"""Finance commands: ``surge reconcile``, ``surge fees sweep`` and ``surge reconciliations …``; ``surge report …`` is
``engine.finance.report_commands``. Both read dates and write output with ``engine.finance.cli_arguments``.

    surge reconcile --processor simulated --from 2026-03-01 --to 2026-03-31 --csv exceptions.csv
    surge reconciliations exceptions --status open
    surge reconciliations resolve 17 --memo "fee corrected by the processor's March statement"
    surge report schedule-a --campaign smith-2026 --from 2026-01-01 --to 2026-03-31 --output schedule-a.csv

Dates name whole UTC days, both inclusive (``--to 2026-03-31`` runs to the end of that day); a full ISO 8601 time
must carry its zone (``Z`` or ``+hh:mm``): one without is refused, not guessed. Without a range, ``surge reconcile``
and ``surge fees sweep`` cover yesterday (UTC), the daily run finance schedules; ``--from`` alone runs to now, and
``--to`` alone covers the day before it. ``--processor`` may be left out when one processor is configured.
``surge reconcile`` exits 0 when the ledger agrees with the processor, 1 when it found exceptions, so that a
scheduled run can alert.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from adapters.registry import build_processor
from engine.audit import Actor
from engine.database import run_with_pool
from engine.finance import reconciliation, report_commands
from engine.finance.cli_arguments import (
    EXIT_EXCEPTIONS_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    end_moment,
    json_text,
    print_json,
    start_moment,
    write_output,
)
from engine.finance.reconcile import rendering
from engine.finance.reconcile.adjustments import AdjustmentRefusedError, AlreadyResolvedError, ExceptionNotFoundError
from engine.finance.reconcile.history import ExceptionStatus, RunView, list_exceptions, list_runs, run_view
from engine.finance.reconcile.model import Window
from engine.payments.fees import book_fees_from_balance_transactions
from engine.settings import load_settings
from ledger.accounts import AccountDirectory
from toolkit.cli_help import examples
from toolkit.times import day_start


def _author(args: argparse.Namespace) -> str:
    return args.by or f"cli:{getpass.getuser()}"


def _actor(args: argparse.Namespace) -> Actor:
    """For the audit trail: who ran it at this terminal (``--by`` names who it is done for, kept in the change)."""
    return Actor(f"cli:{getpass.getuser()}" + (f" for {args.by}" if args.by else ""))


# ---- reconcile ---------------------------------------------------------------------------------------------------


def _processor_kind(args: argparse.Namespace) -> str | None:
    """The configured kind of the processor ``--processor`` names (the only one configured when it names none), or
    None (said on stderr) when there is no such processor or the choice is not clear."""
    kinds = dict(load_settings().processor_specs())
    if args.processor is None:
        if len(kinds) != 1:
            print(f"surge: --processor is needed: configured are {', '.join(kinds)}", file=sys.stderr)
            return None
        [args.processor] = kinds
    if args.processor not in kinds:
        print(f"surge: no processor {args.processor!r}; configured: {', '.join(kinds)}", file=sys.stderr)
        return None
    return kinds[args.processor]


def window_edges(start: datetime | None, end: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """The range a command covers: yesterday (UTC) when none is given, ``--from`` to now, or the day before
    ``--to``."""
    if start is None and end is None:
        today = day_start(now.astimezone(UTC).date())
        return today - timedelta(days=1), today
    if start is None:
        assert end is not None
        return end - timedelta(days=1), end
    return start, end if end is not None else now


def _fees_sweep(args: argparse.Namespace) -> int:
    kind = _processor_kind(args)
    if kind is None:
        return EXIT_USAGE
    args.start, args.end = window_edges(args.start, args.end, datetime.now(UTC))

    async def work(pool: asyncpg.Pool) -> int:
        processor = build_processor(kind, args.processor, pool, os.environ)
        try:
            sweep = await book_fees_from_balance_transactions(pool, AccountDirectory(), processor, args.start, args.end)
        finally:
            await processor.close()
        print(
            f"fees sweep {args.processor} {args.start.isoformat()} .. {args.end.isoformat()}: "
            f"{sweep.transactions} charge balance transactions read, "
            f"{sweep.booked} late fees booked, {sweep.recorded} kept for donations not settled yet"
        )
        return EXIT_OK

    return run_with_pool(load_settings(), work)


def _reconcile(args: argparse.Namespace) -> int:
    kind = _processor_kind(args)
    if kind is None:
        return EXIT_USAGE
    start, end = window_edges(args.start, args.end, datetime.now(UTC))
    try:
        window = Window(start, end, timedelta(seconds=args.slack_s))
    except ValueError as error:
        print(f"surge: {error}", file=sys.stderr)
        return EXIT_USAGE

    async def work(pool: asyncpg.Pool) -> int:
        processor = build_processor(kind, args.processor, pool, os.environ)
        try:
            run_id = await reconciliation.run_reconciliation(pool, processor, kind, window, _author(args), _actor(args))
        except reconciliation.ProcessorReadError as error:
            print(f"surge: {error}", file=sys.stderr)
            return EXIT_USAGE
        finally:
            await processor.close()
        async with pool.acquire() as connection:
            run = await run_view(connection, run_id)
        if run is None:
            raise RuntimeError(f"reconciliation run {run_id} vanished after it was recorded")
        _show_run(run, args)
        return EXIT_EXCEPTIONS_FOUND if run.exceptions else EXIT_OK

    return run_with_pool(load_settings(), work)


def _show_run(run: RunView, args: argparse.Namespace) -> None:
    """A run as JSON (``--json``) or as its summary, and its exceptions as CSV when ``--csv`` names a file."""
    if args.json:
        print_json(rendering.run_json(run))
    else:
        print(rendering.summary_text(run))
    if args.csv:
        write_output(rendering.exceptions_report(run.exceptions, run.id).as_csv(), args.csv)


def _runs_list(args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool) -> int:
        async with pool.acquire() as connection:
            runs = await list_runs(connection, processor=args.processor, limit=args.limit)
        if args.json:
            print_json({"object": "list", "data": [rendering.run_json(run, with_exceptions=False) for run in runs]})
            return EXIT_OK
        for run in runs:
            print(
                f"#{run.id}\t{run.processor}\t{run.window_from.isoformat()}\t{run.window_to.isoformat()}\t"
                f"matched={run.matched}\texceptions={run.exception_count}\t{run.requested_by}\t"
                f"{run.finished_at.isoformat()}"
            )
        return EXIT_OK

    return run_with_pool(load_settings(), work)


def _runs_show(args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool) -> int:
        async with pool.acquire() as connection:
            run = await run_view(connection, args.id)
        if run is None:
            print(f"surge: no reconciliation #{args.id}", file=sys.stderr)
            return EXIT_USAGE
        _show_run(run, args)
        return EXIT_OK

    return run_with_pool(load_settings(), work)


def _exceptions_list(args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool) -> int:
        status = ExceptionStatus(args.status) if args.status else None
        async with pool.acquire() as connection:
            found = await list_exceptions(connection, processor=args.processor, status=status)
        report = rendering.exceptions_report(found)
        write_output(json_text(report.as_json()) if args.json else report.as_csv(), args.output)
        return EXIT_OK

    return run_with_pool(load_settings(), work)


def _resolve(args: argparse.Namespace) -> int:
    try:
        legs = reconciliation.legs_from_json(orjson.loads(args.legs)) if args.legs else None
    except (orjson.JSONDecodeError, reconciliation.LegsInvalidError) as error:
        print(f"surge: --legs: {error}", file=sys.stderr)
        return EXIT_USAGE

    async def work(pool: asyncpg.Pool) -> int:
        async with pool.acquire() as connection:
            try:
                adjustment = await reconciliation.resolve(
                    connection,
                    AccountDirectory(),
                    args.id,
                    memo=args.memo,
                    resolved_by=_author(args),
                    actor=_actor(args),
                    legs=legs,
                )
            except ExceptionNotFoundError:
                print(f"surge: no exception #{args.id}", file=sys.stderr)
                return EXIT_USAGE
            except (
                AlreadyResolvedError,
                AdjustmentRefusedError,
                reconciliation.LegsInvalidError,
                ValueError,
            ) as error:
                print(f"surge: exception #{args.id}: {error}", file=sys.stderr)
                return EXIT_USAGE
        print(
            f"resolved exception #{args.id} with entry {adjustment.entry_reference} by {adjustment.resolved_by} "
            f"at {adjustment.resolved_at.isoformat()}: {adjustment.memo}"
        )
        return EXIT_OK

    return run_with_pool(load_settings(), work)


def register(commands: Any) -> None:
    """Add the finance commands to the ``surge`` parser's sub-commands."""
    run = commands.add_parser(
        "reconcile",
        help="reconcile the ledger against a processor's record",
        description="Match every ledger movement in the range with the processor's balance transactions and record "
        "the run; exits 1 when it found exceptions (for a scheduled run to alert on).",
        **examples(
            "surge reconcile                                  # yesterday (UTC), the one processor configured",
            "surge reconcile --processor stripe --from 2026-03-01 --to 2026-03-31 --csv exceptions.csv",
            "surge reconcile --from 2026-11-03T00:00:00Z      # from then until now",
            "surge reconcile --json | jq .exceptions",
        ),
    )
    run.add_argument("--processor", help="processor name, as in SURGE_PROCESSORS (default: the only one)")
    run.add_argument(
        "--from", dest="start", type=start_moment, help="date (UTC day) or ISO 8601 time with zone (default: yesterday)"
    )
    run.add_argument(
        "--to",
        dest="end",
        type=end_moment,
        help="date (inclusive) or ISO 8601 time with zone (default: now when --from is given)",
    )
    run.add_argument("--slack-s", type=int, default=3600, help="seconds read beyond each edge (default 3600)")
    run.add_argument("--csv", metavar="FILE", help="write the exceptions as CSV ('-' for standard output)")
    run.add_argument("--json", action="store_true", help="print the run as JSON instead of the summary")
    run.add_argument("--by", help="who runs it (default cli:<user>)")
    run.set_defaults(run=_reconcile)

    fees = commands.add_parser("fees", help="processor fees")
    fees_commands = fees.add_subparsers(dest="fees_command", required=True)
    sweep = fees_commands.add_parser(
        "sweep",
        help="book, once, every fee still unknown that the processor's balance transactions report",
        **examples("surge fees sweep                     # yesterday (UTC)", "surge fees sweep --from 2026-11-01"),
    )
    sweep.add_argument("--processor", help="processor name, as in SURGE_PROCESSORS (default: the only one)")
    sweep.add_argument("--from", dest="start", type=start_moment, help="date (UTC day) or time with zone")
    sweep.add_argument("--to", dest="end", type=end_moment, help="date (inclusive) or time with zone")
    sweep.set_defaults(run=_fees_sweep)

    runs = commands.add_parser("reconciliations", help="recorded reconciliation runs and their exceptions")
    runs_commands = runs.add_subparsers(dest="reconciliations_command", required=True)
    listing = runs_commands.add_parser(
        "list",
        help="runs, newest first",
        **examples("surge reconciliations list --limit 5", "surge reconciliations list --processor stripe --json"),
    )
    listing.add_argument("--processor")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--json", action="store_true", help="print the runs as JSON")
    listing.set_defaults(run=_runs_list)
    show = runs_commands.add_parser(
        "show",
        help="one run's summary and exceptions",
        **examples("surge reconciliations show 12", "surge reconciliations show 12 --csv exceptions-12.csv"),
    )
    show.add_argument("id", type=int)
    show.add_argument("--csv", metavar="FILE")
    show.add_argument("--json", action="store_true", help="print the run as JSON")
    show.set_defaults(run=_runs_show)
    exceptions = runs_commands.add_parser(
        "exceptions",
        help="exceptions as CSV (or JSON)",
        **examples("surge reconciliations exceptions --status open", "surge reconciliations exceptions --json"),
    )
    exceptions.add_argument("--status", choices=[s.value for s in ExceptionStatus])
    exceptions.add_argument("--processor")
    exceptions.add_argument("--output", metavar="FILE")
    exceptions.add_argument("--json", action="store_true", help="JSON instead of CSV")
    exceptions.set_defaults(run=_exceptions_list)
    resolve = runs_commands.add_parser(
        "resolve",
        help="resolve an exception with an adjusting entry",
        **examples(
            'surge reconciliations resolve 17 --memo "fee corrected by the processor\'s March statement"',
            'surge reconciliations resolve 17 --memo "wrong account" '
            '--legs \'[{"account":"fees:stripe:USD","amount":30,"currency":"USD"},'
            '{"account":"clearing:stripe:USD","amount":-30,"currency":"USD"}]\'',
        ),
    )
    resolve.add_argument("id", type=int, help="exception id")
    resolve.add_argument("--memo", required=True, help="why: kept with the entry, who and when")
    resolve.add_argument(
        "--legs", help='JSON legs instead of the proposed ones: [{"account":..,"amount":..,"currency":..}]'
    )
    resolve.add_argument("--by", help="who resolves it (default cli:<user>)")
    resolve.set_defaults(run=_resolve)
    report_commands.register(commands)
