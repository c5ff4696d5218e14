"""The durable queue: donations accepted without processor capacity wait as ``queued`` rows in the database.

The queue runner of every engine process claims due rows with ``FOR UPDATE SKIP LOCKED`` (as many as the processors
have room for), leases them as ``charging`` and hands each to recovery, which looks up or charges it.
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
from engine.pipeline.recovery import process_claimed
from engine.workers import PollingLoop, finish_tasks

_logger = logging.getLogger(__name__)


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
             RETURNING due.previous_status, {", ".join("d." + c.strip() for c in DONATION_COLUMNS.split(","))}""",
            min(capacity, self.limits.claim_batch_max),
            self.limits.lease.total_seconds(),
        )
        for row in rows:
            donation = Donation.from_row(row)
            task = asyncio.create_task(process_claimed(self._pool, self._charger, donation, row["previous_status"]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(rows)
