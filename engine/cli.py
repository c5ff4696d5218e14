"""The ``surge`` command line."""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from importlib.metadata import entry_points
from typing import Any

import asyncpg
import orjson

from engine import database
from engine.administration import issue_key, open_campaign, withdraw_key
from engine.audit import Actor, read
from engine.campaigns import (
    FEDERAL_LIMIT_PER_ELECTION_MINOR,
    ITEMIZATION_THRESHOLD_MINOR,
    CampaignExistsError,
    campaign_from_json,
    list_campaigns,
)
from engine.database import DatabaseStartError, run_with_pool
from engine.finance import cli as finance_cli
from engine.keys import Role, list_keys
from engine.settings import ConfigError, Settings, load_settings
from engine.validation import ValidationProblem
from ledger.check import check_ledger
from toolkit import migrations
from toolkit.cli_help import examples


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        host=getattr(args, "host", None), port=getattr(args, "port", None), workers=getattr(args, "workers", None)
    )


def _serve(args: argparse.Namespace) -> int:
    from engine.serve import serve

    return serve(_settings(args))


def _db_migrate(args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool) -> int:
        print("migrations are up to date")
        return 0

    return run_with_pool(_settings(args), work)


def _db_status(args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool) -> int:
        async with pool.acquire() as connection:
            statuses = await database.migration_status(connection)
        if args.json:
            rows = [
                {
                    "version": item.version,
                    "name": item.name,
                    "applied_at": item.applied_at.isoformat() if item.applied_at else None,
                }
                for item in statuses
            ]
            print(orjson.dumps({"object": "list", "data": rows}, option=orjson.OPT_INDENT_2).decode())
            return 0
        for item in statuses:
            state = f"applied {item.applied_at:%Y-%m-%d %H:%M:%S}" if item.applied_at else "pending"
            print(f"{item.version:04d}_{item.name}: {state}")
        return 0

    return run_with_pool(_settings(args), work, apply_migrations=False)


def _ledger_check(args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool) -> int:
        async with pool.acquire() as connection:
            report = await check_ledger(connection)
        if args.json:
            body = {"ok": report.ok, "entries": report.entries, "accounts": report.accounts}
            print(orjson.dumps({**body, "problems": list(report.problems)}, option=orjson.OPT_INDENT_2).decode())
            return 0 if report.ok else 1
        for problem in report.problems:
            print(f"PROBLEM: {problem}")
        verdict = "ok" if report.ok else f"FAILED ({len(report.problems)} problems)"
        print(f"ledger check: {report.entries} entries, {report.accounts} accounts: {verdict}")
        return 0 if report.ok else 1

    return run_with_pool(_settings(args), work)


def _campaigns_create(args: argparse.Namespace) -> int:
    try:
        campaign = campaign_from_json(
            {
                "slug": args.slug,
                "name": args.name,
                "election": args.election,
                "currency": args.currency,
                "contribution_limit": args.limit,
                "itemization_threshold": args.itemization_threshold,
                "require_attestation": not args.no_attestation,
                "allowed_origins": args.allowed_origin or [],
            }
        )
    except ValidationProblem as error:
        print(f"surge: {error.message}", file=sys.stderr)
        return 2

    async def work(pool: asyncpg.Pool) -> int:
        processors = [name for name, _ in _settings(args).processor_specs()]
        async with pool.acquire() as connection:
            try:
                await open_campaign(connection, campaign, processors, _operator())
            except CampaignExistsError:
                print(f"surge: campaign {campaign.slug} already exists", file=sys.stderr)
                return 1
        print(
            f"created campaign {campaign.slug} ({campaign.currency}, limit {campaign.contribution_limit_minor} "
            f"per donor for {campaign.election})"
        )
        return 0

    return run_with_pool(_settings(args), work)


def _campaigns_list(args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool) -> int:
        campaigns = await list_campaigns(pool)
        if args.json:
            data = [campaign.as_json() for campaign in campaigns]
            print(orjson.dumps({"object": "list", "data": data}, option=orjson.OPT_INDENT_2).decode())
            return 0
        for c in campaigns:
            origins = ",".join(c.allowed_origins) or "-"
            print(
                f"{c.slug}\t{c.currency}\t{c.election}\tlimit={c.contribution_limit_minor}\t"
                f"itemize>{c.itemization_threshold_minor}\torigins={origins}\t{c.name}"
            )
        return 0

    return run_with_pool(_settings(args), work)


def _operator() -> Actor:
    """Who runs a command, for the audit trail: the terminal's user."""
    return Actor(f"cli:{getpass.getuser()}")


def _keys_create(args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool) -> int:
        async with pool.acquire() as connection:
            key, secret = await issue_key(connection, Role(args.role), args.label, _operator())
        print(f"{key.id} ({key.role.value}): {secret}")
        print("The secret is shown only this once; Surge stores its hash.", file=sys.stderr)
        return 0

    return run_with_pool(_settings(args), work)


def _keys_revoke(args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool) -> int:
        async with pool.acquire() as connection:
            if await withdraw_key(connection, args.id, _operator()):
                print(f"revoked {args.id}: refused within 30 s by every engine process, its dashboard sessions now")
                return 0
            known = any(key["id"] == args.id for key in await list_keys(connection))
        print(f"surge: {'key ' + args.id + ' was revoked already' if known else 'no key ' + args.id}", file=sys.stderr)
        return 0 if known else 2

    return run_with_pool(_settings(args), work)


def _keys_list(args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool) -> int:
        keys = await list_keys(pool)
        if args.json:
            print(orjson.dumps({"object": "list", "data": keys}, option=orjson.OPT_INDENT_2).decode())
            return 0
        for key in keys:
            state = f"revoked {key['revoked']}" if key["revoked"] else "active"
            print(f"{key['id']}\t{key['role']}\t{state}\tcreated {key['created']}\t{key['label'] or ''}")
        return 0

    return run_with_pool(_settings(args), work)


def _audit(args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool) -> int:
        events = await read(pool, limit=args.limit, action=args.action, subject=args.subject)
        if args.json:
            data = [event.as_json() for event in events]
            print(orjson.dumps({"object": "list", "data": data}, option=orjson.OPT_INDENT_2).decode())
            return 0
        for event in events:
            changes = orjson.dumps(event.changes).decode() if event.changes else ""
            print(
                f"#{event.id}\t{event.at.isoformat()}\t{event.actor}\t{event.address or '-'}\t{event.action}\t"
                f"{event.subject or '-'}\t{changes}"
            )
        return 0

    return run_with_pool(_settings(args), work)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="surge",
        description="Surge donation processing engine",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the engine (HTTP API)",
        **examples("surge serve", "surge serve --host 0.0.0.0 --port 8080 --workers 2"),
    )
    serve.add_argument("--host", help="address to listen on (SURGE_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (SURGE_PORT, default 8000)")
    serve.add_argument("--workers", type=int, help="processes sharing the port (SURGE_WORKERS, default 1)")
    serve.set_defaults(run=_serve)

    db = commands.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    db.add_parser("migrate", help="apply pending migrations", **examples("surge db migrate")).set_defaults(
        run=_db_migrate
    )
    status = db.add_parser(
        "status", help="list migrations and whether each is applied", **examples("surge db status --json")
    )
    status.add_argument("--json", action="store_true", help="print the migrations as JSON")
    status.set_defaults(run=_db_status)

    ledger = commands.add_parser("ledger", help="the ledger").add_subparsers(dest="ledger_command", required=True)
    check = ledger.add_parser(
        "check",
        help="prove entries balance and balances equal postings (exit 1 when not)",
        **examples("surge ledger check", "surge ledger check --json"),
    )
    check.add_argument("--json", action="store_true", help="print the result as JSON")
    check.set_defaults(run=_ledger_check)

    campaigns = commands.add_parser("campaigns", help="campaigns").add_subparsers(
        dest="campaigns_command", required=True
    )
    create = campaigns.add_parser(
        "create",
        help="create a campaign",
        **examples(
            'surge campaigns create smith-2026 --name "Smith for Senate" --election 2026-general',
            'surge campaigns create fund --name "Clean Water Fund" --election 2026 --currency EUR --limit 1000000',
        ),
    )
    create.add_argument("slug", help="short name used by forms, e.g. smith-2026")
    create.add_argument("--name", required=True)
    create.add_argument("--election", required=True, help="election label, e.g. 2026-primary")
    create.add_argument("--currency", default="USD")
    create.add_argument("--limit", type=int, default=FEDERAL_LIMIT_PER_ELECTION_MINOR, help="per donor, minor units")
    create.add_argument("--itemization-threshold", type=int, default=ITEMIZATION_THRESHOLD_MINOR)
    create.add_argument("--allowed-origin", action="append", help="browser origin allowed to post (repeatable)")
    create.add_argument("--no-attestation", action="store_true", help="do not require the citizenship attestation")
    create.set_defaults(run=_campaigns_create)
    listing = campaigns.add_parser("list", help="list campaigns", **examples("surge campaigns list --json"))
    listing.add_argument("--json", action="store_true", help="print the campaigns as JSON")
    listing.set_defaults(run=_campaigns_list)

    keys = commands.add_parser("keys", help="API keys").add_subparsers(dest="keys_command", required=True)
    key = keys.add_parser(
        "create",
        help="create an API key and print it once",
        **examples('surge keys create --role form --label "donation page"', "surge keys create --role finance"),
    )
    key.add_argument("--role", required=True, choices=[r.value for r in Role])
    key.add_argument("--label")
    key.set_defaults(run=_keys_create)
    revoke = keys.add_parser(
        "revoke", help="revoke an API key (and its dashboard sessions)", **examples("surge keys revoke key_3f9a1c2b")
    )
    revoke.add_argument("id", help="the key's id (key_…), as `surge keys list` shows it")
    revoke.set_defaults(run=_keys_revoke)
    keys_list = keys.add_parser(
        "list", help="keys, their roles and states (never secrets)", **examples("surge keys list")
    )
    keys_list.add_argument("--json", action="store_true", help="print the keys as JSON")
    keys_list.set_defaults(run=_keys_list)

    audit = commands.add_parser(
        "audit",
        help="the audit trail: who did what, when, from where",
        **examples(
            "surge audit --limit 20", "surge audit --action refund_requested --json", "surge audit --subject key_3f9a"
        ),
    )
    audit.add_argument("--limit", type=int, default=50)
    audit.add_argument("--action", help="only this action (refund_requested, key_revoked, signed_in, …)")
    audit.add_argument("--subject", help="only events about this (a donation, key, campaign or exception:<id>)")
    audit.add_argument("--json", action="store_true", help="print the events as JSON")
    audit.set_defaults(run=_audit)
    finance_cli.register(commands)  # reconcile, reconciliations, report
    _register_plugins(commands)
    return parser


EXIT_CODES = """exit codes:
  0    done; for checks and reconciliations: everything agrees
  1    reconciliation found exceptions, the ledger check found problems, or the command failed (database,
       migrations, configuration at run time)
  2    usage: bad arguments or settings (the message says which)
  130  interrupted"""


# Commands from other installed packages (``surge loadtest``) register themselves through this entry-point group,
# so the engine installs and runs without them and never imports them by name.
PLUGIN_GROUP = "surge.commands"


def _register_plugins(commands: Any) -> None:
    for entry_point in entry_points(group=PLUGIN_GROUP):
        entry_point.load()(commands)


def main(argv: list[str] | None = None) -> Any:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ConfigError as error:
        print(f"surge: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except (ConfigError, DatabaseStartError, migrations.MigrationError) as error:
        print(f"surge: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
