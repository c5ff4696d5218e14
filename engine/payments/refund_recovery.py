"""The refund worker: every engine process resolves refunds left ``refunding`` or ``pending`` until each is final.

A refund is left unfinished by a crash after it was recorded (before, during or after the processor call), by a
processor that timed out or was unavailable, or by a processor that accepted it for later (pending). Once its lease
(``next_attempt_at``) has passed, the worker claims it (``FOR UPDATE SKIP LOCKED``, so engine processes share the
work without doing any twice), asks the processor what became of it (``lookup_refund``: by the processor's refund
id when known, else by the idempotency key / Surge refund id) and records the answer. Only a ``refunding`` refund the
processor has no record of is sent again — with the same idempotency key, so a request that lands late is
deduplicated. Succeeded is booked, failed releases the reservation; anything else is tried again later, with a
growing delay. One the processor still has not decided after the review bound (the donation's: attempts or hours,
``SURGE_REVIEW_AFTER_LOOKUPS`` / ``SURGE_REVIEW_AFTER_HOURS``) is flagged for finance (``needs_review_at``): counted
on the dashboard (engine/finance/attention.py) and by ``surge_refunds_needing_review``; it keeps being looked up, so
a late answer still settles it once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import asyncpg

from adapters.base import Processor, RefundResult, RefundStatus
from engine.metrics import Metrics
from engine.payments.refunds import (
    UNFINISHED_STATUSES,
    Refund,
    apply_refund_result,
    lease_seconds,
    lookup_refund,
    send_refund,
)
from engine.pipeline.review import ReviewLimits
from engine.workers import PollingLoop
from ledger.accounts import AccountDirectory

_logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RefundWorkerLimits:
    timeout_s: float = 10.0  # each processor call (lookup or refund)
    poll_interval_s: float = 1.0
    claim_batch_max: int = 20
    review: ReviewLimits = field(default_factory=ReviewLimits)


class RefundWorker:
    def __init__(
        self,
        pool: asyncpg.Pool,
        directory: AccountDirectory,
        processors: Mapping[str, Processor],
        limits: RefundWorkerLimits | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._pool = pool
        self._metrics = metrics
        self._directory = directory
        self._processors = dict(processors)
        self.limits = limits or RefundWorkerLimits()
        # A round that resolved something goes again at once: more may be due.
        self._loop = PollingLoop("refund worker", self.run_once, self.limits.poll_interval_s, lambda n: n > 0)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        """Stop after the current round; a refund it was resolving keeps its lease and is resolved later."""
        await self._loop.stop()

    def wake(self) -> None:
        self._loop.wake()

    async def run_once(self) -> int:
        """Claim the refunds due now and resolve each; return how many were claimed."""
        if not self._processors:
            return 0
        rows = await self._pool.fetch(
            """WITH due AS (
                   SELECT r.id FROM surge.refunds r JOIN surge.donations d ON d.id = r.donation_id
                    WHERE r.status IN ('refunding', 'pending') AND r.next_attempt_at <= now()
                      AND d.processor = ANY($3::text[])
                    ORDER BY r.next_attempt_at LIMIT $1 FOR UPDATE OF r SKIP LOCKED)
               UPDATE surge.refunds r
                  SET attempts = r.attempts + 1, next_attempt_at = now() + make_interval(secs => $2)
                 FROM due, surge.donations d
                WHERE r.id = due.id AND d.id = r.donation_id
            RETURNING r.id, r.donation_id, r.amount_minor, r.currency, r.status, r.processor_reference,
                      r.failure_message, r.created_at, d.processor, d.processor_reference AS charge_reference""",
            self.limits.claim_batch_max,
            lease_seconds(self.limits.timeout_s),
            list(self._processors),
        )
        if rows:
            await asyncio.gather(
                *(self._resolve(Refund.from_row(row), row["processor"], row["charge_reference"]) for row in rows)
            )
        if self._metrics is not None:
            self._metrics.refunds_needing_review.set(await refunds_needing_review(self._pool))
        return len(rows)

    async def _resolve(self, refund: Refund, processor_name: str, charge_reference: str) -> None:
        try:
            processor = self._processors[processor_name]
            result = await self.ask(processor, refund, charge_reference)
            async with self._pool.acquire() as connection:
                settled = await apply_refund_result(connection, self._directory, refund.id, result)
                undecided = settled.status in UNFINISHED_STATUSES
                if undecided and await flag_if_undecided(connection, refund.id, self.limits.review) and self._metrics:
                    self._metrics.refunds_flagged_for_review.inc()
            _logger.info("refund %s resolved by the worker: %s (%s)", refund.id, settled.status, result.status)
        except Exception:
            # The refund keeps its lease and is tried again when it expires.
            _logger.exception("resolving refund %s failed", refund.id)

    async def ask(self, processor: Processor, refund: Refund, charge_reference: str) -> RefundResult:
        found = await lookup_refund(processor, refund, charge_reference, self.limits.timeout_s)
        if found.status is not RefundStatus.NOT_FOUND:
            return found
        if refund.status != "refunding":
            # The processor accepted it (pending) yet cannot find it now: not proof that it never happened.
            return RefundResult(RefundStatus.UNKNOWN, refund.processor_reference, "pending refund not found")
        # Never made (the call was lost, refused as retryable, or never sent): send it, with the same key.
        return await send_refund(processor, refund, charge_reference, self.limits.timeout_s)


async def flag_if_undecided(connection: asyncpg.Connection, refund_id: str, review: ReviewLimits) -> bool:
    """Flag an unfinished refund past the review bound; True when this call raised the flag."""
    flagged = await connection.fetchval(
        """UPDATE surge.refunds SET needs_review_at = now()
            WHERE id = $1 AND status IN ('refunding', 'pending') AND needs_review_at IS NULL
              AND (attempts >= $2 OR created_at <= now() - make_interval(secs => $3))
        RETURNING true""",
        refund_id,
        review.lookups_max,
        review.age_max_hours * 3600,
    )
    if flagged:
        _logger.warning("refund %s: the processor has not decided it; flagged for finance's review", refund_id)
    return bool(flagged)


async def refunds_needing_review(pool: asyncpg.Pool | asyncpg.Connection) -> int:
    count: int = await pool.fetchval(
        """SELECT count(*) FROM surge.refunds
            WHERE needs_review_at IS NOT NULL AND status IN ('refunding', 'pending')"""
    )
    return count
