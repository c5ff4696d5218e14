"""The aiohttp application factory: resources live in ``cleanup_ctx`` and are closed in reverse order."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from engine.api import health, ledger_routes
from engine.api.errors import error_middleware
from engine.config import Settings
from engine.database import create_pool
from engine.state import ACCOUNTS, DATABASE_URL, LEDGER_BATCHER, POOL, SETTINGS
from ledger import migrate
from ledger.accounts import AccountDirectory
from ledger.batcher import BatcherLimits, GroupCommitter
from ledger.entries import EntryRequest, EntryResult
from ledger.posting import post_entries

_logger = logging.getLogger(__name__)

REQUEST_BODY_SIZE_MAX_BYTES = 64 * 1024


def batcher_limits(settings: Settings) -> BatcherLimits:
    return BatcherLimits(
        batch_size_max=settings.batch_size_max,
        batch_delay_ms=settings.batch_delay_ms,
        queue_size_max=settings.queue_size_max,
        committers=settings.committers,
    )


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pool = await create_pool(app[DATABASE_URL], size_max=settings.pool_size_max)
    async with pool.acquire() as connection:
        applied = await migrate.migrate(connection)
    for migration in applied:
        _logger.info("applied migration %04d_%s", migration.version, migration.name)
    app[POOL] = pool
    yield
    await pool.close()


async def _ledger(app: web.Application) -> AsyncIterator[None]:
    directory = AccountDirectory()
    app[ACCOUNTS] = directory
    batcher: GroupCommitter[EntryRequest, EntryResult] = GroupCommitter(
        app[POOL],
        lambda connection, requests: post_entries(connection, directory, requests),
        batcher_limits(app[SETTINGS]),
        name="ledger",
    )
    batcher.start()
    app[LEDGER_BATCHER] = batcher
    yield
    await batcher.stop()


def create_app(settings: Settings, database_url: str) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=REQUEST_BODY_SIZE_MAX_BYTES)
    app[SETTINGS] = settings
    app[DATABASE_URL] = database_url
    app.cleanup_ctx.extend([_database, _ledger])
    app.add_routes(health.routes)
    app.add_routes(ledger_routes.routes)
    return app
