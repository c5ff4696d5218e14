"""The parked-event sweeper: applies parked processor events whose wait ended outside a webhook, and reports the
backlog.

Why a sweeper and not a hook in settlement: settlement is the group-committed hot path, where one batch settles
many donors' charges; applying someone's parked refund inside that transaction would put a rare path's failure
(and its locks) into every batch. And a settled charge is only one of the things an event waits for — a donation
recorded after its event, a dispute opened — so one loop that asks "whose wait is over?" covers them all, survives
crashes (the state is in the database) and runs in every engine process (each event is claimed with SKIP LOCKED
and applied in its own transaction). The wait it adds is at most one interval, after a processor that was already
out of order; an event that unblocks others in a webhook applies them at once (engine/payments/processor_events.py).

An event parked longer than ``age_max_s`` is a problem for a person: logged once as an error, and counted in
``surge_parked_events_overdue``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import asyncpg

from engine.metrics import Metrics
from engine.payments import parked_events
from engine.payments.parked_events import OutcomeKind, WaitingFor
from engine.payments.processor_events import retry_parked
from ledger.accounts import AccountDirectory

_logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SweeperLimits:
    interval_s: float = 1.0
    batch_size_max: int = 100  # parked events retried per sweep
    age_max_s: float = 3600.0  # parked longer than this is reported as a problem

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.batch_size_max < 1 or self.age_max_s <= 0:
            raise ValueError(f"sweeper limits must be positive: {self}")


@dataclass(frozen=True, slots=True)
class SweepReport:
    resolved: int  # applied, duplicate or found never applicable
    waiting: int  # still parked after the sweep
    overdue: int


async def sweep_once(
    pool: asyncpg.Pool, directory: AccountDirectory, metrics: Metrics, limits: SweeperLimits
) -> SweepReport:
    resolved = 0
    async with pool.acquire() as connection:
        for processor, event_id in await parked_events.ready_keys(connection, limits.batch_size_max):
            try:
                outcome = await retry_parked(connection, directory, processor, event_id)
            except Exception:  # one event's bug must not stop the others: it stays parked and becomes overdue
                _logger.exception("%s parked event %s failed to apply", processor, event_id)
                continue
            if outcome is not None and outcome.kind is not OutcomeKind.NOT_YET:
                resolved += 1
                metrics.parked_events_resolved.labels(outcome.kind.value).inc()
        backlog = await parked_events.backlog(connection, limits.age_max_s)
    for waiting_for in WaitingFor:
        metrics.parked_events.labels(waiting_for.value).set(backlog.waiting.get(waiting_for, 0))
    metrics.parked_events_overdue.set(backlog.overdue)
    for processor, event_id, waited_for, parked_at in backlog.newly_overdue:
        _logger.error(
            "%s event %s parked since %s still waits (%s) after %g s: look into it",
            processor,
            event_id,
            parked_at.isoformat(),
            waited_for,
            limits.age_max_s,
        )
    return SweepReport(resolved, sum(backlog.waiting.values()), backlog.overdue)


async def run_sweeper(
    pool: asyncpg.Pool, directory: AccountDirectory, metrics: Metrics, limits: SweeperLimits | None = None
) -> None:
    """Sweep every ``interval_s`` until cancelled; a failed sweep is logged and the next one tries again."""
    limits = limits or SweeperLimits()
    while True:
        try:
            await sweep_once(pool, directory, metrics, limits)
        except (asyncpg.PostgresError, OSError) as error:
            _logger.warning("parked-event sweep failed (%s); retrying in %g s", type(error).__name__, limits.interval_s)
        await asyncio.sleep(limits.interval_s)
