"""The durable queue: donations accepted without processor capacity wait as ``queued`` rows in the database.

The queue runner of every engine process claims due rows with ``FOR UPDATE SKIP LOCKED`` (as many as the processors
have room for), leases them as ``charging`` and hands each to recovery, which looks up or charges it.

Velocity is checked again when a row is claimed: a queued donation passed intake's check, but during a card-testing
burst its source's declines pile up while it waits. A row never sent to a processor whose source (address or donor)
is now refused is settled ``failed`` (decline code ``velocity_exceeded``) without a processor call; one query per
claimed batch.
"""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg

from engine.metrics import Metrics
from engine.pipeline.charger import Charger
from engine.pipeline.donations import DONATION_COLUMNS, Donation
from engine.pipeline.limits import PipelineLimits
from engine.pipeline.recovery import may_have_charge, process_claimed
from engine.pipeline.velocity import VELOCITY_DECLINE_CODE, refused_sources
from engine.workers import PollingLoop, finish_tasks

_logger = logging.getLogger(__name__)

CARD_TESTING_MESSAGE = "Not charged: too many declined payments from this source recently (card testing suspected)."


class DurableQueue:
    def __init__(self, pool: asyncpg.Pool, charger: Charger, limits: PipelineLimits, metrics: Metrics) -> None:
        self._pool = pool
        self._charger = charger
        self.limits = limits
        self.metrics = metrics
        self.depth = 0  # rows queued, charging or pending, as last counted (plus those enqueued since)
        self.needing_review = 0  # of those, flagged for finance's review (engine/pipeline/review.py)
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_count = 0.0
        # A round that claimed something goes again at once: more may be due.
        self._loop = PollingLoop("queue runner", self._round, limits.queue_poll_ms / 1000, lambda n: n > 0)

    def start(self) -> None:
        self._loop.start()

    async def stop(self, timeout_s: float) -> None:
        """Stop claiming; let in-flight charges finish (their rows stay leased and are recovered if they don't)."""
        await self._loop.stop()
        await finish_tasks(self._tasks, timeout_s)

    def enqueued(self) -> None:
        """A row was just recorded ``queued``: count it and wake the runner."""
        self.depth += 1
        self._loop.wake()

    def wake(self) -> None:
        self._loop.wake()

    async def _round(self) -> int:
        """Count the queue (at most once a second), then claim and charge what is due."""
        if time.monotonic() - self._last_count > 1.0:
            await self._count()
            self._last_count = time.monotonic()
        return await self._claim_due()

    async def _count(self) -> None:
        row = await self._pool.fetchrow(
            """SELECT count(*) AS depth, count(*) FILTER (WHERE needs_review_at IS NOT NULL) AS needing_review
                 FROM surge.donations WHERE status IN ('queued', 'charging', 'pending')"""
        )
        self.depth, self.needing_review = row["depth"], row["needing_review"]
        self.metrics.queue_depth.labels("durable").set(self.depth)
        self.metrics.donations_needing_review.set(self.needing_review)

    async def _claim_due(self) -> int:
        capacity = self._charger.capacity()
        if capacity == 0:
            return 0
        rows = await self._pool.fetch(
            f"""WITH due AS (
                    SELECT id, status AS previous_status FROM surge.donations
                     WHERE status IN ('queued', 'charging', 'pending') AND next_attempt_at <= now()
                     ORDER BY next_attempt_at, created_at
                     LIMIT $1 FOR UPDATE SKIP LOCKED)
                UPDATE surge.donations d
                   SET status = 'charging', attempts = d.attempts + 1, updated_at = now(),
                       next_attempt_at = now() + make_interval(secs => $2)
                  FROM due WHERE d.id = due.id
             RETURNING due.previous_status, host(d.client_ip) AS client_ip,
                       {", ".join("d." + c.strip() for c in DONATION_COLUMNS.split(","))}""",
            min(capacity, self.limits.claim_batch_max),
            self.limits.lease.total_seconds(),
        )
        claimed = [(Donation.from_row(row), row["previous_status"], row["client_ip"]) for row in rows]
        # Should this raise, the claimed rows stay leased: claimed (and checked) again once the lease expires.
        refused = await self._refused_for_card_testing(claimed)
        for donation, previous_status, _ in claimed:
            if donation.id in refused:
                work = self._fail_card_testing(donation)
            else:
                work = process_claimed(self._pool, self._charger, donation, previous_status)
            task = asyncio.create_task(work)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(rows)

    async def _refused_for_card_testing(self, claimed: list[tuple[Donation, str, str | None]]) -> set[str]:
        """The ids of claimed rows never sent to a processor whose source is now refused by velocity. A row that may
        have a charge is left to recovery's lookup: failing it here could drop a charge that happened."""
        unsent = [(donation, ip) for donation, previous, ip in claimed if not may_have_charge(donation, previous)]
        if not unsent:
            return set()
        sources = [(ip, (donation.campaign, donation.election, donation.donor_key)) for donation, ip in unsent]
        verdicts = await refused_sources(self._pool, sources, self.limits.velocity)
        return {donation.id for (donation, _), refused in zip(unsent, verdicts, strict=True) if refused}

    async def _fail_card_testing(self, donation: Donation) -> None:
        try:
            await self._charger.fail_unsent(donation, VELOCITY_DECLINE_CODE, CARD_TESTING_MESSAGE)
        except Exception:
            # The row keeps its lease and is claimed (and checked) again after it expires.
            _logger.exception("failing queued donation %s for card testing failed", donation.id)
