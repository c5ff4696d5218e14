"""Typed application state shared by the handlers (aiohttp ``AppKey``s)."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from adapters.base import Processor
from engine.campaigns import CampaignDirectory
from engine.donor_page.page_keys import PageKeys
from engine.keys import KeyVerifier
from engine.metrics import Metrics
from engine.pipeline.charging import Pipeline
from engine.pipeline.gate import ProcessorGate
from engine.settings import Settings
from ledger.accounts import AccountDirectory

SETTINGS = web.AppKey("settings", Settings)
DATABASE_URL = web.AppKey("database_url", str)
POOL = web.AppKey("pool", asyncpg.Pool)
ACCOUNTS = web.AppKey("accounts", AccountDirectory)
KEYS = web.AppKey("keys", KeyVerifier)
CAMPAIGNS = web.AppKey("campaigns", CampaignDirectory)
PAGE_KEYS = web.AppKey("page_keys", PageKeys)  # the donation page's form key per campaign
METRICS = web.AppKey("metrics", Metrics)
PIPELINE = web.AppKey("pipeline", Pipeline)
# In priority order; the first whose gate admits a charge takes it (failover).
PROCESSORS = web.AppKey("processors", list[tuple[Processor, ProcessorGate]])
