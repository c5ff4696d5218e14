"""The ``surge`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from engine.config import ConfigError, Settings, load_settings
from engine.database import DatabaseStartError, create_pool, database_url
from ledger import migrate
from ledger.check import check_ledger


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        host=getattr(args, "host", None), port=getattr(args, "port", None), workers=getattr(args, "workers", None)
    )


def _with_database(settings: Settings, work: Callable[[asyncpg.Pool], Awaitable[int]]) -> int:
    async def run(url: str) -> int:
        pool = await create_pool(url, size_max=4, size_min=1)
        try:
            async with pool.acquire() as connection:
                await migrate.migrate(connection)
            return await work(pool)
        finally:
            await pool.close()

    with database_url(settings) as url:
        return asyncio.run(run(url))


def _serve(args: argparse.Namespace) -> int:
    from engine.serve import serve

    return serve(_settings(args))


def _db_migrate(args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool) -> int:
        print("migrations are up to date")
        return 0

    return _with_database(_settings(args), work)


def _db_status(args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool) -> int:
        async with pool.acquire() as connection:
            for item in await migrate.status(connection):
                state = f"applied {item.applied_at:%Y-%m-%d %H:%M:%S}" if item.applied_at else "pending"
                print(f"{item.version:04d}_{item.name}: {state}")
        return 0

    settings = _settings(args)
    with database_url(settings) as url:

        async def run() -> int:
            pool = await create_pool(url, size_max=2, size_min=1)
            try:
                return await work(pool)
            finally:
                await pool.close()

        return asyncio.run(run())


def _ledger_check(args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool) -> int:
        async with pool.acquire() as connection:
            report = await check_ledger(connection)
        for problem in report.problems:
            print(f"PROBLEM: {problem}")
        verdict = "ok" if report.ok else f"FAILED ({len(report.problems)} problems)"
        print(f"ledger check: {report.entries} entries, {report.accounts} accounts: {verdict}")
        return 0 if report.ok else 1

    return _with_database(_settings(args), work)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="surge", description="Surge donation processing engine")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the engine (HTTP API)")
    serve.add_argument("--host", help="address to listen on (SURGE_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (SURGE_PORT, default 8000)")
    serve.add_argument("--workers", type=int, help="processes sharing the port (SURGE_WORKERS, default 1)")
    serve.set_defaults(run=_serve)

    db = commands.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    db.add_parser("migrate", help="apply pending migrations").set_defaults(run=_db_migrate)
    db.add_parser("status", help="list migrations and whether each is applied").set_defaults(run=_db_status)

    ledger = commands.add_parser("ledger", help="the ledger").add_subparsers(dest="ledger_command", required=True)
    ledger.add_parser("check", help="prove entries balance and balances equal postings").set_defaults(run=_ledger_check)
    return parser


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
    except (DatabaseStartError, migrate.MigrationError) as error:
        print(f"surge: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
