"""Typed application state shared by the handlers (aiohttp ``AppKey``s)."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from engine.config import Settings
from ledger.accounts import AccountDirectory
from ledger.batcher import GroupCommitter
from ledger.entries import EntryRequest, EntryResult

SETTINGS = web.AppKey("settings", Settings)
DATABASE_URL = web.AppKey("database_url", str)
POOL = web.AppKey("pool", asyncpg.Pool)
ACCOUNTS = web.AppKey("accounts", AccountDirectory)
LEDGER_BATCHER = web.AppKey("ledger_batcher", GroupCommitter[EntryRequest, EntryResult])
