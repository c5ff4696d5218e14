"""Schema migrations: numbered SQL files in each package's ``migrations`` folder, each applied once in a transaction.

Each package owns its schema (the ledger its books, the engine its donations, the simulated processor its record);
the caller declares which packages make up the database. Version numbers are unique across those packages and
migrations apply in version order, so an existing database moves forward in place whichever package a file lives in.

Hand-written rather than a migration framework: the whole job is "apply numbered SQL files once, in order, under a
lock", and the SQL files are the schema's documentation. Several engine processes may start at once, so the runner
holds an advisory lock while it applies.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

import asyncpg

MIGRATION_LOCK_KEY = 0x5355524745  # "SURGE"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class MigrationStatus:
    version: int
    name: str
    applied_at: datetime | None


class MigrationError(Exception):
    """The database's migration history does not match the migrations shipped with this version."""


def available_migrations(packages: Sequence[str]) -> list[Migration]:
    migrations = []
    for package in packages:
        folder = resources.files(package) / "migrations"
        for item in folder.iterdir():
            match = _FILE_NAME.match(item.name)
            if match:
                migrations.append(Migration(int(match.group(1)), match.group(2), item.read_text()))
    migrations.sort(key=lambda m: m.version)
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version number: {versions}")
    return migrations


async def _ensure_history_table(connection: asyncpg.Connection) -> None:
    await connection.execute(
        """CREATE TABLE IF NOT EXISTS public.surge_migrations (
               version    integer PRIMARY KEY,
               name       text NOT NULL,
               checksum   text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )


async def migrate(connection: asyncpg.Connection, packages: Sequence[str]) -> list[Migration]:
    """Apply every pending migration; return the ones applied now."""
    applied_now = []
    await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await _ensure_history_table(connection)
        rows = await connection.fetch("SELECT version, checksum FROM public.surge_migrations")
        applied = {row["version"]: row["checksum"] for row in rows}
        for migration in available_migrations(packages):
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} was changed after it was applied; "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO public.surge_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            applied_now.append(migration)
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied_now


async def status(connection: asyncpg.Connection, packages: Sequence[str]) -> list[MigrationStatus]:
    await _ensure_history_table(connection)
    rows = await connection.fetch("SELECT version, applied_at FROM public.surge_migrations")
    applied = {row["version"]: row["applied_at"] for row in rows}
    return [MigrationStatus(m.version, m.name, applied.get(m.version)) for m in available_migrations(packages)]
