"""An existing database at an older version, for tests that prove a migration moves it forward in place."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest

from engine import database
from tests.conftest import _with_database
from toolkit import migrations


@pytest.fixture
async def empty_database(database_url: str) -> AsyncIterator[str]:
    """A database with no migrations applied (the per-test fixture's databases come migrated)."""
    name = f"surge_old_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield _with_database(database_url, name)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


async def migrate_up_to(connection: asyncpg.Connection, version: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Apply the shipped migrations up to and including ``version``, as a database of that age had them."""
    shipped = migrations.available_migrations

    def older(packages: Sequence[str]) -> list[migrations.Migration]:
        return [m for m in shipped(packages) if m.version <= version]

    with monkeypatch.context() as patch:
        patch.setattr(migrations, "available_migrations", older)
        await database.migrate(connection)
