"""The aiohttp application factory: resources live in ``cleanup_ctx`` and are closed in reverse order."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
import os
from collections.abc import AsyncIterator, Mapping

import asyncpg
from aiohttp import web

from adapters.base import Processor
from adapters.registry import build_processor
from engine import chart_of_accounts
from engine.api import (
    admin,
    dashboard,
    dashboard_admin,
    dashboard_donations,
    dashboard_finance,
    dashboard_recurring,
    donations,
    donor_page,
    finance,
    health,
    ledger_routes,
    observability,
    openapi,
    recurring,
    recurring_pages,
    simulated_tokens,
    webhooks,
)
from engine.api.cors import cors_middleware
from engine.api.errors import error_middleware
from engine.api.replica import READ_POOL, replica_reads_middleware
from engine.api.state import (
    ACCOUNTS,
    CAMPAIGNS,
    DATABASE_URL,
    KEYS,
    METRICS,
    PAGE_KEYS,
    PIPELINE,
    POOL,
    PROCESSORS,
    SETTINGS,
)
from engine.campaigns import CampaignDirectory, list_campaigns
from engine.database import create_pool, migrate, pool_options, session_url
from engine.donor_page.page_keys import PageKeys
from engine.keys import KeyVerifier
from engine.metrics import Metrics
from engine.payments.event_sweeper import run_sweeper
from engine.payments.refund_recovery import RefundWorker, RefundWorkerLimits
from engine.pipeline.budget import shared_budgets
from engine.pipeline.challenge import ChallengeConfig, challenge_verifier
from engine.pipeline.charging import Pipeline, PipelineLimits
from engine.pipeline.gate import GateLimits, ProcessorGate
from engine.pipeline.review import ReviewLimits
from engine.pipeline.velocity import VelocityLimits
from engine.receipts.assembly import build_relay, build_sender
from engine.receipts.relay import ReceiptRelay
from engine.recurring.dunning import RetrySchedule
from engine.recurring.links import link_signer
from engine.recurring.notices import Notifier
from engine.recurring.scheduler import RecurringScheduler, SchedulerLimits
from engine.settings import Settings
from ledger.accounts import AccountDirectory
from ledger.batcher import BatcherLimits

_logger = logging.getLogger(__name__)

REQUEST_BODY_SIZE_MAX_BYTES = 64 * 1024
GC_FIRST_GENERATION_THRESHOLD = 10_000
RECEIPT_RELAY = web.AppKey("receipt_relay", ReceiptRelay)  # absent when this process does not send receipts
PROCESSOR_OVERRIDES = web.AppKey(
    "processor_overrides", list[Processor]
)  # tests: ready-made processors instead of settings


def batcher_limits(settings: Settings, batcher: str = "intake") -> BatcherLimits:
    """The limits of the pipeline's ``intake`` or ``settle`` batcher."""
    delay_ms = getattr(settings, f"{batcher}_batch_delay_ms")
    return BatcherLimits(
        batch_size_max=settings.batch_size_max,
        batch_size_min=getattr(settings, f"{batcher}_batch_size_min"),
        batch_delay_ms=settings.batch_delay_ms if delay_ms is None else delay_ms,
        queue_size_max=settings.queue_size_max,
        committers=settings.committers,
    )


def gate_limits(settings: Settings) -> GateLimits:
    return GateLimits(
        rate_per_s=settings.processor_rate_per_s / settings.workers,
        burst=max(1, int(settings.processor_rate_per_s / settings.workers / 5)),
        concurrency_max=settings.processor_concurrency_max,
    )


def pipeline_limits(settings: Settings) -> PipelineLimits:
    return PipelineLimits(
        charge_timeout_ms=settings.charge_timeout_ms,
        in_flight_max=settings.in_flight_max,
        queue_depth_max=settings.queue_depth_max,
        velocity=VelocityLimits(
            declines_min=settings.velocity_declines_max,
            window_s=settings.velocity_window_s,
            challenge_ratio=settings.velocity_challenge_ratio,
            refuse_ratio=settings.velocity_refuse_ratio,
            refuse_cards_min=settings.velocity_refuse_cards_min,
            challenges_enabled=settings.challenge_verifier != "none",
        ),
        review=ReviewLimits(settings.review_after_lookups, settings.review_after_hours),
    )


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pool = await create_pool(app[DATABASE_URL], size_max=settings.pool_size_max, **pool_options(settings))
    migrations_connection = await asyncpg.connect(session_url(settings, app[DATABASE_URL]))
    try:
        for migration in await migrate(migrations_connection):
            _logger.info("applied migration %04d_%s", migration.version, migration.name)
    finally:
        await migrations_connection.close()
    app[POOL] = pool
    # Reads that decide no money (reports, the dashboard, listings) from a streaming replica: engine/api/replica.py
    replica = None
    if settings.replica_url:
        replica = await create_pool(settings.replica_url, size_max=settings.pool_size_max, **pool_options(settings))
    app[READ_POOL] = replica or pool
    app[ACCOUNTS] = AccountDirectory()
    app[KEYS] = KeyVerifier(pool)
    app[CAMPAIGNS] = CampaignDirectory(pool)
    app[PAGE_KEYS] = PageKeys(pool)
    yield
    if replica is not None:
        await replica.close()
    await pool.close()


def _build_processors(app: web.Application, environment: Mapping[str, str]) -> list[Processor]:
    if PROCESSOR_OVERRIDES in app:
        overrides: list[Processor] = app[PROCESSOR_OVERRIDES]
        return overrides
    return [build_processor(kind, name, app[POOL], environment) for name, kind in app[SETTINGS].processor_specs()]


async def _processors(app: web.Application) -> AsyncIterator[None]:
    processors = _build_processors(app, os.environ)
    limits = gate_limits(app[SETTINGS])
    async with app[POOL].acquire() as connection:
        currencies = {c.currency for c in await list_campaigns(connection)}
        for processor in processors:
            for currency in currencies:
                await chart_of_accounts.ensure_processor_accounts(connection, processor.name, currency)
    for processor in processors:
        start = getattr(processor, "start", None)  # optional: processors with background work
        if start is not None and inspect.isawaitable(started := start()):
            await started
    async with contextlib.AsyncExitStack() as budgets:
        # One budget for all engine hosts when shared (engine/pipeline/budget.py); otherwise each gate's own bucket.
        leased = {}
        if app[SETTINGS].processor_budget == "shared":
            names = [processor.name for processor in processors]
            rate_per_s, redis_url = app[SETTINGS].processor_rate_per_s, app[SETTINGS].redis_url
            shared = await budgets.enter_async_context(shared_budgets(app[POOL], names, rate_per_s, redis_url))
            leased = shared.buckets
        gated: list[tuple[Processor, ProcessorGate]] = [
            (processor, ProcessorGate(limits, budget=leased.get(processor.name))) for processor in processors
        ]
        app[PROCESSORS] = gated
        yield
    for processor in processors:
        await processor.close()


async def _pipeline(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    processors: list[tuple[Processor, ProcessorGate]] = app[PROCESSORS]
    challenge = ChallengeConfig(
        settings.challenge_verifier,
        settings.challenge_verify_url,
        settings.challenge_secret,
        settings.challenge_timeout_ms,
    )
    pipeline = Pipeline(
        app[POOL],
        app[ACCOUNTS],
        processors,
        pipeline_limits(settings),
        batcher_limits(settings),
        app[METRICS],
        challenge_verifier=challenge_verifier(challenge),
        settle_limits=batcher_limits(settings, "settle"),
    )
    pipeline.start()
    app[PIPELINE] = pipeline
    yield
    await pipeline.stop()


async def _parked_event_sweeper(app: web.Application) -> AsyncIterator[None]:
    # Parked processor events (out of order) are applied when their wait ends: see engine/payments/event_sweeper.py.
    task = asyncio.create_task(run_sweeper(app[POOL], app[ACCOUNTS], app[METRICS]), name="parked-event-sweeper")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _refund_worker(app: web.Application) -> AsyncIterator[None]:
    # Resolves refunds left unfinished (crash, timeout, pending at the processor): engine/payments/refund_recovery.py
    processors = {processor.name: processor for processor, _ in app[PROCESSORS]}
    settings = app[SETTINGS]
    limits = RefundWorkerLimits(
        timeout_s=settings.charge_timeout_ms / 1000,
        review=ReviewLimits(settings.review_after_lookups, settings.review_after_hours),
    )
    worker = RefundWorker(app[POOL], app[ACCOUNTS], processors, limits, app[METRICS])
    worker.start()
    yield
    await worker.stop()


async def _receipt_relay(app: web.Application) -> AsyncIterator[None]:
    # Sends the receipts written with each settlement and refund: engine/receipts/relay.py
    if not app[SETTINGS].receipt_relay:
        yield  # another process sends them
        return
    relay = build_relay(app[POOL], app[SETTINGS], app[METRICS])
    app[RECEIPT_RELAY] = relay
    relay.start()
    yield
    await relay.stop()


async def _recurring_scheduler(app: web.Application) -> AsyncIterator[None]:
    # Charges recurring plans' due installments through the pipeline: engine/recurring/scheduler.py
    settings = app[SETTINGS]
    limits = SchedulerLimits(
        poll_ms=settings.recurring_poll_ms,
        lease_s=pipeline_limits(settings).lease.total_seconds() * 2,
        retry_schedule=RetrySchedule.parse(settings.recurring_retry_days),
    )
    signer = await link_signer(app[POOL], settings.recurring_link_secret)
    manage_link = recurring_pages.manage_link(settings, signer)
    notifier = Notifier(build_sender(settings), settings.receipts_from, manage_link)
    if RECEIPT_RELAY in app:
        app[RECEIPT_RELAY].manage_link = manage_link  # installments' receipts carry it too
    processors = {processor.name: processor for processor, _ in app[PROCESSORS]}
    scheduler = RecurringScheduler(app[POOL], app[PIPELINE], app[CAMPAIGNS], limits, notifier, processors)
    scheduler.start()
    app[recurring.RECURRING_SCHEDULER] = scheduler
    app[recurring_pages.LINK_SIGNER] = signer
    yield
    await scheduler.stop()


async def _tune_garbage_collector(app: web.Application) -> None:
    # Profiled at ~6 % of a worker's CPU under load: each request allocates many short-lived objects, and the
    # default first-generation threshold (700) runs collections constantly. Start-up objects live for the whole
    # process, so they are frozen out of every later collection.
    gc.freeze()
    gc.set_threshold(GC_FIRST_GENERATION_THRESHOLD, 20, 20)


def create_app(settings: Settings, database_url: str, processors: list[Processor] | None = None) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, observability.metrics_middleware, cors_middleware],
        client_max_size=REQUEST_BODY_SIZE_MAX_BYTES,
    )
    app[SETTINGS] = settings
    app[DATABASE_URL] = database_url
    app[METRICS] = Metrics()
    if processors is not None:
        app[PROCESSOR_OVERRIDES] = processors
    app.cleanup_ctx.extend([_database, _processors, _pipeline, _parked_event_sweeper, _refund_worker, _receipt_relay])
    app.cleanup_ctx.append(_recurring_scheduler)  # after the pipeline it submits to; stopped before it
    app.on_startup.append(_tune_garbage_collector)  # after the resources above are up
    app.middlewares.append(replica_reads_middleware)
    for module in (
        *(health, ledger_routes, donations, admin, webhooks, observability, openapi, finance, dashboard),
        *(dashboard_donations, dashboard_finance, dashboard_admin),
        *(donor_page, simulated_tokens),
        *(recurring, recurring_pages, dashboard_recurring),
    ):
        app.add_routes(module.routes)
    return app
