"""A served Surge app on a fresh database, with keys and a demo campaign, talked to over real HTTP."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from adapters.base import Processor
from engine.app import create_app
from engine.bootstrap import bootstrap
from engine.keys import Role
from engine.settings import Settings


@dataclass
class Surge:
    client: TestClient
    pool: asyncpg.Pool
    keys: dict[Role, str]
    app: Any
    counter: list[int] = field(default_factory=lambda: [0])

    def auth(self, role: Role = Role.FORM) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def next_key(self) -> str:
        self.counter[0] += 1
        return f"idem-{self.counter[0]}"

    async def donate(self, body: dict[str, Any], key: str | None = None, **headers: str) -> tuple[int, dict[str, Any]]:
        response = await self.client.post(
            "/v1/donations",
            json=body,
            headers={**self.auth(), "Idempotency-Key": key or self.next_key(), **headers},
        )
        return response.status, await response.json()


def donation(amount: int = 2500, payment_method: str = "pm_card_visa", **donor: Any) -> dict[str, Any]:
    person = {
        "first_name": "Jane",
        "last_name": "Doe",
        "email": "jane@example.org",
        "address_line1": "1 Main St",
        "city": "Springfield",
        "state": "IL",
        "postal_code": "62701",
        "country": "US",
        "employer": "Acme",
        "occupation": "Engineer",
        "citizenship_attested": True,
    }
    person.update(donor)
    return {"amount": amount, "currency": "usd", "campaign": "demo", "donor": person, "payment_method": payment_method}


def surge_settings(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(home=tmp_path, database_url=database_url, **overrides)


async def start_surge(
    database_url: str, settings: Settings, processors: list[Processor] | None = None
) -> tuple[TestServer, TestClient, asyncpg.Pool, dict]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    async with pool.acquire() as connection:
        keys = await bootstrap(connection, create_demo_campaign=True)
    server = TestServer(create_app(settings, database_url, processors=processors))
    client = TestClient(server)
    await client.start_server()
    return server, client, pool, keys


@contextlib.asynccontextmanager
async def running_surge(
    database_url: str, settings: Settings, processors: list[Processor] | None = None
) -> AsyncIterator[Surge]:
    """The app served on a test server with these settings (and these processors instead of the configured ones),
    the demo campaign and a key per role; closed after."""
    server, client, pool, keys = await start_surge(database_url, settings, processors)
    try:
        yield Surge(client, pool, keys, server.app)
    finally:
        await client.close()
        await pool.close()


@pytest.fixture
async def surge(database_url: str, tmp_path: Path) -> AsyncIterator[Surge]:
    async with running_surge(database_url, surge_settings(database_url, tmp_path)) as running:
        yield running


@pytest.fixture
async def unthrottled_surge(database_url: str, tmp_path: Path) -> AsyncIterator[Surge]:
    """No processor rate budget in the way: every donation is charged in its request (no 202 from the queue)."""
    settings = surge_settings(database_url, tmp_path, processor_rate_per_s=1_000_000.0)
    async with running_surge(database_url, settings) as running:
        yield running
