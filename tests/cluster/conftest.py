"""Scale-out parts started for real: a PostgreSQL primary with a streaming replica, PgBouncer in transaction mode
in front of both (databases ``surge`` and ``surge_replica``), installed by the project's script when missing.
One set per test (a few seconds to start)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from engine.app import create_app
from engine.bootstrap import bootstrap
from engine.database import migrate
from engine.keys import Role, create_key
from engine.settings import Settings
from loadtest.cluster_services import (
    PgBouncerDatabase,
    PostgresServer,
    ServicesUnavailableError,
    install_services,
    pgbouncer,
    primary_and_replica,
)
from loadtest.engine_process import free_port

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Services:
    primary: PostgresServer
    replica: PostgresServer
    pgbouncer_url: str  # with {database}

    @property
    def direct_url(self) -> str:
        return self.primary.url("surge")

    @property
    def replica_url(self) -> str:
        return self.replica.url("surge")


@pytest.fixture
async def services() -> AsyncIterator[Services]:
    try:
        install_services()
    except ServicesUnavailableError as error:
        pytest.skip(f"PgBouncer/HAProxy missing and not installable with apt: {error}")
    folder = Path(tempfile.mkdtemp(prefix="surge-cluster-"))
    with contextlib.ExitStack() as cleanup, primary_and_replica(folder) as (primary, replica):
        cleanup.callback(shutil.rmtree, folder, ignore_errors=True)
        assert replica is not None
        databases = [PgBouncerDatabase("surge", primary), PgBouncerDatabase("surge_replica", replica)]
        async with pgbouncer(folder / "pgbouncer", databases, free_port()) as url:
            connection = await asyncpg.connect(primary.url("surge"))
            try:
                await migrate(connection)
            finally:
                await connection.close()
            yield Services(primary, replica, url)


@dataclass
class Served:
    client: TestClient
    keys: dict[Role, str]

    def auth(self, role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


@contextlib.asynccontextmanager
async def served(services: Services, settings: Settings) -> AsyncIterator[Served]:
    """The app on a test server with ``settings``; keys made (once) over the direct connection."""
    connection = await asyncpg.connect(services.direct_url)
    try:
        keys = await bootstrap(connection, create_demo_campaign=True)
        if not keys:  # a second app in one module: new keys of each role
            keys = {role: (await create_key(connection, role, label="cluster test"))[1] for role in Role}
    finally:
        await connection.close()
    assert settings.database_url is not None
    client = TestClient(TestServer(create_app(settings, settings.database_url)))
    await client.start_server()
    try:
        yield Served(client, keys)
    finally:
        await client.close()
