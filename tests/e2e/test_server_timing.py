"""Each answer says how long it waited on the processor (Server-Timing), so that clients and the load test can tell
Surge's own time from the processor's."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from adapters.simulated import SimulatedConfig, SimulatedProcessor
from engine.app import create_app
from engine.bootstrap import bootstrap
from engine.keys import Role
from tests.e2e.conftest import Surge, donation, surge_settings

LATENCY_MS = 120.0


@pytest.fixture
async def slow_processor_surge(database_url: str, tmp_path: Path) -> AsyncIterator[Surge]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=6)
    async with pool.acquire() as connection:
        keys = await bootstrap(connection, create_demo_campaign=True)
    processor = SimulatedProcessor(
        pool, SimulatedConfig(latency_ms_median=LATENCY_MS, latency_ms_p99=LATENCY_MS, seed=3)
    )
    settings = surge_settings(database_url, tmp_path, processor_rate_per_s=1_000_000.0)
    client = TestClient(TestServer(create_app(settings, database_url, processors=[processor])))
    await client.start_server()
    try:
        yield Surge(client, pool, keys, client.app)
    finally:
        await client.close()
        await pool.close()


def _processor_ms(header: str | None) -> float | None:
    match = re.fullmatch(r"processor;dur=([0-9.]+)", header or "")
    return float(match.group(1)) if match else None


async def test_a_charged_donation_says_how_long_the_processor_took(slow_processor_surge: Surge) -> None:
    surge = slow_processor_surge
    response = await surge.client.post(
        "/v1/donations", json=donation(1500), headers={**surge.auth(Role.FORM), "Idempotency-Key": "timing-1"}
    )
    assert response.status == 201, await response.text()
    waited = _processor_ms(response.headers.get("Server-Timing"))
    # The simulator sleeps its latency inside the call; the call is within the answer's own time.
    assert waited is not None and waited >= LATENCY_MS * 0.5, response.headers.get("Server-Timing")
    body = await response.json()

    # The next request on the same connection waited on no processor: its count starts from zero.
    again = await surge.client.get(f"/v1/donations/{body['id']}", headers=surge.auth(Role.FORM))
    assert again.status == 200 and "Server-Timing" not in again.headers
    replay = await surge.client.post(
        "/v1/donations", json=donation(1500), headers={**surge.auth(Role.FORM), "Idempotency-Key": "timing-1"}
    )
    assert replay.status == 201 and "Server-Timing" not in replay.headers
