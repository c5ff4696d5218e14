"""Reads from a streaming replica (``SURGE_REPLICA_URL``): reports, the dashboard's listings and pages, reconciliation
and donation listings — reads that decide no money. Writes, and reads that decide money (intake, settlement,
refunds, a reconciliation run itself), stay on the primary's pool.

A page read from the replica says how stale it is: the handler reads through ``read_connection``, which notes the
replica's lag on the request; ``replica_reads_middleware`` then adds ``Surge-Replica-Lag-Ms`` to the response and,
to an HTML page, a line saying so.
Without a replica ``READ_POOL`` is the primary's pool and nothing is added.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from html import escape
from typing import Any

import asyncpg
from aiohttp import web

from engine.database import replica_lag_ms

Handler = Any  # aiohttp's middleware handler type
READ_POOL = web.AppKey("read_pool", asyncpg.Pool)
_LAG_MS = web.RequestKey("replica_lag_ms", object)  # int ms, or None when the "replica" is a primary
LAG_HEADER = "Surge-Replica-Lag-Ms"


@contextlib.asynccontextmanager
async def read_connection(request: web.Request) -> AsyncIterator[asyncpg.Connection]:
    """A connection for reads that decide no money: the replica's when there is one."""
    async with request.app[READ_POOL].acquire() as connection:
        if request.app[READ_POOL] is not _primary_pool(request):
            request[_LAG_MS] = await replica_lag_ms(connection)
        yield connection


def read_pool(request: web.Request) -> asyncpg.Pool:
    """The pool for reads that decide no money, for code that takes a pool (the lag is noted as by read_connection
    only when read through it)."""
    return request.app[READ_POOL]


def _primary_pool(request: web.Request) -> asyncpg.Pool:
    from engine.api.state import POOL  # state imports the pipeline; kept out of this module's import time

    return request.app[POOL]


@web.middleware
async def replica_reads_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Say how stale a response read from the replica is (before the response is prepared, so a page can change)."""
    response = await handler(request)
    if _LAG_MS not in request:
        return response
    lag = request[_LAG_MS]
    response.headers[LAG_HEADER] = "" if lag is None else str(lag)
    if isinstance(response, web.Response) and response.content_type == "text/html" and response.text:
        note = (
            '<p class="muted" id="replica-lag">Read from the replica'
            + ("" if lag is None else f", {escape(str(lag))} ms behind the primary")
            + ".</p>"
        )
        response.text = response.text.replace("<body>", "<body>" + note, 1)
    return response
