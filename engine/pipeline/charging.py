"""The donation pipeline: intake → charge (now, or from the durable queue) → settle, exactly once.

:class:`Pipeline` assembles the parts and admits requests (bounded in-flight count and queue depth):

- ``submission``: record the intent in an intake batch, then charge at once or leave it ``queued``;
- ``charger``: one processor call under a timeout, and recording its outcome (settled through the settle batch);
- ``queue``: the durable queue, claimed with ``FOR UPDATE SKIP LOCKED`` by every engine process;
- ``recovery``: a claimed row that may already have a charge is looked up before it is charged, never blindly.

The idempotency key sent to the processor is derived from the donation id, so even a repeated charge cannot double.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from adapters.base import Processor
from engine.campaigns import Campaign
from engine.database import INDEX_LOOKUPS_ONLY
from engine.keys import ApiKey
from engine.metrics import Metrics
from engine.pipeline.challenge import CampaignChallenges, ChallengeVerifier
from engine.pipeline.charger import Charger, processor_idempotency_key
from engine.pipeline.donation_request import DonationRequest
from engine.pipeline.donations import Donation
from engine.pipeline.gate import ProcessorGate
from engine.pipeline.intake import IntakeItem, IntakeResult, commit_intake
from engine.pipeline.limits import PipelineLimits
from engine.pipeline.outcomes import Overload, OverloadError, Refusal
from engine.pipeline.queue import DurableQueue
from engine.pipeline.settlement import Settlement, commit_settlements
from engine.pipeline.submission import Submission
from ledger.accounts import AccountDirectory
from ledger.batcher import BatcherLimits, GroupCommitter

__all__ = ["Pipeline", "PipelineLimits", "processor_idempotency_key"]


class Pipeline:
    def __init__(
        self,
        pool: asyncpg.Pool,
        accounts: AccountDirectory,
        processors: Sequence[tuple[Processor, ProcessorGate]],
        limits: PipelineLimits,
        batcher_limits: BatcherLimits,
        metrics: Metrics,
        challenge_verifier: ChallengeVerifier | None = None,
        settle_limits: BatcherLimits | None = None,  # the settlement batcher's, when not batcher_limits
    ) -> None:
        if not processors:
            raise ValueError("at least one processor is needed")
        self.limits = limits
        self.metrics = metrics
        self._intake: GroupCommitter[IntakeItem, IntakeResult] = GroupCommitter(
            pool,
            lambda connection, items: commit_intake(connection, items, limits.velocity),
            batcher_limits,
            name="intake",
            observer=metrics.observe_batch,
            transaction_setup=INDEX_LOOKUPS_ONLY,
        )
        self._settle: GroupCommitter[Settlement, bool] = GroupCommitter(
            pool,
            lambda connection, items: commit_settlements(connection, accounts, items),
            settle_limits or batcher_limits,
            name="settle",
            observer=metrics.observe_batch,
            transaction_setup=INDEX_LOOKUPS_ONLY,
        )
        self._charger = Charger(pool, processors, self._settle, limits, metrics)
        self._queue = DurableQueue(pool, self._charger, limits, metrics)
        # A campaign's own challenge rule (always / auto): read by intake here and by the donation page.
        self.campaign_challenges = CampaignChallenges(pool)
        self._submission = Submission(
            self._intake, self._charger, self._queue, limits, challenge_verifier, self.campaign_challenges
        )
        self._in_flight = 0
        self._stopping = False

    # -- life cycle -------------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._intake.start()
        self._settle.start()
        self._queue.start()

    async def stop(self, timeout_s: float = 20.0) -> None:
        """Stop claiming; let in-flight charges finish (their rows stay leased and are recovered if they don't)."""
        self._stopping = True
        await self._queue.stop(timeout_s)
        await self._intake.stop()
        await self._settle.stop()

    @property
    def queue_depth(self) -> int:
        return self._queue.depth

    def wake(self) -> None:
        self._queue.wake()

    # -- admission --------------------------------------------------------------------------------------------------

    async def submit(
        self,
        key: ApiKey,
        idempotency_key: str,
        request: DonationRequest,
        campaign: Campaign,
        client_ip: str | None,
        challenge: str | None = None,
    ) -> Donation | Refusal:
        """Accept, charge (or queue) a donation; raises :class:`OverloadError` when it cannot be taken now."""
        if self._stopping:
            raise OverloadError(Overload.SHUTTING_DOWN)
        if self._in_flight >= self.limits.in_flight_max:
            raise OverloadError(Overload.IN_FLIGHT_FULL)
        if self._queue.depth >= self.limits.queue_depth_max:
            raise OverloadError(Overload.QUEUE_FULL)
        self._in_flight += 1
        self.metrics.in_flight.inc()
        try:
            return await self._submission.submit(key, idempotency_key, request, campaign, client_ip, challenge)
        finally:
            self._in_flight -= 1
            self.metrics.in_flight.dec()
