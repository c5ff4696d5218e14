"""When the database goes away the API answers 503 with Retry-After (retry with the same Idempotency-Key), not 500.

Real failures, no stand-ins: a connection to a port nobody listens on (the socket is gone: OSError), and a
connection the server terminates mid-session (pg_terminate_backend: AdminShutdown, class 57P)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from engine.api.errors import error_middleware


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # free again once closed: nobody listens there


async def client_for(handler: Callable[[web.Request], Awaitable[web.Response]]) -> TestClient:
    app = web.Application(middlewares=[error_middleware])
    app.router.add_post("/v1/donations", handler)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def terminated(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    victim = await asyncpg.connect(database_url)
    async with asyncpg.create_pool(database_url, min_size=1, max_size=1) as admin:
        await admin.execute("SELECT pg_terminate_backend($1)", victim.get_server_pid())
    yield victim
    victim.terminate()


async def assert_503(client: TestClient) -> None:
    response = await client.post("/v1/donations", json={})
    body = await response.json()
    assert response.status == 503, body
    assert response.headers["Retry-After"] == "5"
    assert body["error"]["code"] == "database_unavailable" and body["error"]["type"] == "api_error"


async def test_a_database_that_cannot_be_reached_is_a_503() -> None:
    port = closed_port()

    async def handler(request: web.Request) -> web.Response:
        await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", timeout=5)
        return web.json_response({})

    client = await client_for(handler)
    try:
        await assert_503(client)
    finally:
        await client.close()


async def test_a_connection_the_server_ended_is_a_503(terminated: asyncpg.Connection) -> None:
    async def handler(request: web.Request) -> web.Response:
        await terminated.fetchval("SELECT 1")
        return web.json_response({})

    client = await client_for(handler)
    try:
        await assert_503(client)
    finally:
        await client.close()
