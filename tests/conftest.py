"""Test session set-up: a real PostgreSQL (embedded by default, ``DATABASE_URL`` when set) and a fresh database per
test, cloned from a migrated template so that each test starts from an empty ledger in a few tens of ms."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from engine import database
from engine.database import create_pool, embedded_server
from tests.finance.browser import install_chromium

TEMPLATE_DATABASE = f"surge_template_{os.getpid()}"


def _with_database(url: str, name: str) -> str:
    # Both embedded (socket in the query string) and TCP URLs have the database as the path.
    base, _, query = url.partition("?")
    scheme_and_host = base.rsplit("/", 1)[0] if base.count("/") > 2 else base
    return f"{scheme_and_host}/{name}" + (f"?{query}" if query else "")


async def _admin(url: str, *statements: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def _create_template(server_url: str) -> None:
    await _admin(server_url, f"DROP DATABASE IF EXISTS {TEMPLATE_DATABASE}", f"CREATE DATABASE {TEMPLATE_DATABASE}")
    connection = await asyncpg.connect(_with_database(server_url, TEMPLATE_DATABASE))
    try:
        await database.migrate(connection)
    finally:
        await connection.close()


@pytest.fixture(scope="session", autouse=True)
def engine_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Engines started as processes by the tests keep their files (receipts written as .eml without SMTP) in a
    temporary folder, never in the user's data folder."""
    home = tmp_path_factory.mktemp("surge-home")
    patch = pytest.MonkeyPatch()
    patch.setenv("SURGE_HOME", str(home))
    yield home
    patch.undo()


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """URL of a server where tests may create databases."""
    external = os.environ.get("DATABASE_URL")
    if external:
        asyncio.run(_create_template(external))
        yield external
        asyncio.run(_admin(external, f"DROP DATABASE IF EXISTS {TEMPLATE_DATABASE}"))
        return
    home = Path(tempfile.mkdtemp(prefix="surge-test-"))
    with embedded_server(home / "postgres", delete_on_exit=True) as url:
        os.environ["SURGE_TEST_EMBEDDED_URL"] = url
        asyncio.run(_create_template(url))
        yield url


@pytest.fixture
async def database_url(postgres_server_url: str) -> AsyncIterator[str]:
    """A fresh, migrated, empty database for one test."""
    name = f"surge_test_{uuid.uuid4().hex[:12]}"
    await _admin(postgres_server_url, f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DATABASE}")
    yield _with_database(postgres_server_url, name)
    await _admin(postgres_server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, size_max=10)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
def chromium() -> Iterator[str]:
    """Debian's Chromium for the browser tests (Playwright drives it), installed once; skipped where it cannot be."""
    executable, reason = install_chromium()
    if executable is None:
        pytest.skip(reason)
    yield executable
