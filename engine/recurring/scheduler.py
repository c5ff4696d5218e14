"""The recurring scheduler: every engine process runs one; together they charge each plan's periods exactly once.

A round has three steps, each over rows claimed with ``FOR UPDATE SKIP LOCKED`` so processes share the work:

1. **Materialise** — plans whose next period is due get that period's installment row; the row's primary key
   ``(plan, period)`` makes the period exist once whoever gets there first.
2. **Submit** — due installments are leased (``charging``) and each attempt becomes a donation through the same
   pipeline as any other (``Pipeline.submit``: the limit check, the durable queue, recovery, settlement, receipt),
   under the internal recurring key with the idempotency key ``recurring:<plan>:<period>:<attempt>``. The attempt
   number only advances once the previous attempt's donation is final and not charged, so a period is charged at
   most once; a process that dies anywhere in between leaves the installment leased, and whoever claims it next
   submits the same key again — intake answers with the donation already made (or makes it, if the crash came
   first), and the pipeline's own recovery finishes a charge left in flight: exactly once.
3. **Resolve** — installments whose donation is final are settled: succeeded; declined → retried on the dunning
   schedule or given up (hard decline, retries exhausted: the plan is cancelled); refused by intake (the donor's
   election limit on the installment's own date) → skipped with the reason, the plan going on or stopping by the
   campaign's ``on_limit``. Every attempt and outcome is kept in ``surge.recurring_attempts`` for finance
   (engine/recurring/outcomes.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from adapters.base import Processor, off_session_token
from engine.campaigns import CampaignDirectory
from engine.keys import ApiKey, Role
from engine.pipeline.charging import Pipeline
from engine.pipeline.donation_request import DonationRequest, donor_key, request_fingerprint
from engine.pipeline.donations import Donation
from engine.pipeline.outcomes import OverloadError, Refusal, RefusalReason
from engine.recurring.dunning import RetrySchedule
from engine.recurring.notices import Notifier
from engine.recurring.outcomes import resolve_finished, skip_installment
from engine.recurring.plans import RECURRING_KEY_ID, ensure_recurring_key
from engine.recurring.saved_methods import stored_details
from engine.workers import PollingLoop, finish_tasks

_logger = logging.getLogger(__name__)

RECURRING_KEY = ApiKey(RECURRING_KEY_ID, Role.FORM)
FINAL_DONATION_STATUSES = ("succeeded", "declined", "failed")
# Intake refusals that skip the period (the donor is told): anything else is a bug.
SKIP_REASONS = {
    RefusalReason.LIMIT_EXCEEDED: "contribution_limit_exceeded",
    RefusalReason.EMPLOYER_REQUIRED: "employer_required",
    RefusalReason.VELOCITY_EXCEEDED: "velocity_exceeded",
    RefusalReason.CHALLENGE_REQUIRED: "challenge_required",
}


@dataclass(frozen=True)
class SchedulerLimits:
    poll_ms: int = 1_000
    materialise_batch_max: int = 1_000  # plans given their next installment per statement
    claim_batch_max: int = 200  # installments claimed per statement
    in_flight_max: int = 500  # installments being submitted at once (per process)
    lease_s: float = 60.0  # a claimed installment's lease: past it, another process may submit it again
    recheck_s: float = 30.0  # how often an installment waiting for its donation's outcome is looked at again
    overload_delay_s: float = 1.0  # after the pipeline shed the submission
    retry_schedule: RetrySchedule = field(default_factory=RetrySchedule)


def installment_idempotency_key(plan_id: str, period: int, attempt: int) -> str:
    return f"recurring:{plan_id}:{period}:{attempt}"


@dataclass(frozen=True, slots=True)
class ClaimedInstallment:
    plan_id: str
    period: int
    attempt: int
    amount_minor: int
    donation_id: str | None
    campaign: str
    currency: str
    donor: dict[str, Any]
    refcode: str | None
    customer_reference: str
    payment_method_reference: str


def installment_request(claimed: ClaimedInstallment) -> DonationRequest:
    """The donation request of one attempt. The donor's fields were validated when the plan was made; the payment
    method is the off-session token of the saved method (made here only: the API refuses it from clients). The
    fingerprint names the attempt, not the card, so a replay after a card update is still the same request."""
    donor = claimed.donor
    return DonationRequest(
        amount_minor=claimed.amount_minor,
        currency=claimed.currency,
        campaign=claimed.campaign,
        donor=donor,
        payment_method=off_session_token(claimed.customer_reference, claimed.payment_method_reference),
        metadata={"recurring_plan": claimed.plan_id, "recurring_period": str(claimed.period)},
        donor_key=donor_key(donor["first_name"], donor["last_name"], donor["postal_code"]),
        fingerprint=request_fingerprint(
            {
                "plan": claimed.plan_id,
                "period": claimed.period,
                "attempt": claimed.attempt,
                "amount": claimed.amount_minor,
            }
        ),
        refcode=claimed.refcode,
    )


class RecurringScheduler:
    def __init__(
        self,
        pool: asyncpg.Pool,
        pipeline: Pipeline,
        campaigns: CampaignDirectory,
        limits: SchedulerLimits,
        notifier: Notifier | None = None,
        processors: Mapping[str, Processor] | None = None,
    ) -> None:
        self._pool = pool
        self._processors = dict(processors or {})
        self._notifier = notifier
        self._pipeline = pipeline
        self._campaigns = campaigns
        self.limits = limits
        self._tasks: set[asyncio.Task[None]] = set()
        self._key_ready = False
        self._loop = PollingLoop("recurring scheduler", self.run_round, limits.poll_ms / 1000, lambda n: n > 0)

    def start(self) -> None:
        self._loop.start()

    def wake(self) -> None:
        self._loop.wake()

    async def stop(self, timeout_s: float = 20.0) -> None:
        """Stop claiming; submissions under way finish (or stay leased, and are submitted again by the next)."""
        await self._loop.stop()
        await finish_tasks(self._tasks, timeout_s)

    async def drain(self) -> None:
        """Wait for the submissions started so far (tests, the load test's engine-less audit)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def run_round(self) -> int:
        made = await materialise_due(self._pool, self.limits.materialise_batch_max)
        limits = self.limits
        resolved, card_checks = await resolve_finished(self._pool, limits.claim_batch_max, limits.retry_schedule)
        for plan_id in card_checks:
            await self._apply_card_update(plan_id)
        claimed = await self._claim_and_submit()
        notified = await self._notifier.send_due(self._pool) if self._notifier is not None else 0
        return made + resolved + claimed + notified

    async def _apply_card_update(self, plan_id: str) -> None:
        """After a decline a card updater can cure: read the saved method again; when the processor has a renewed
        card (expiry or number), record it and retry the period at once."""
        row = await self._pool.fetchrow(
            """SELECT m.id, m.processor, m.customer_reference, m.payment_method_reference, m.brand, m.last4,
                      m.exp_month, m.exp_year
                 FROM surge.recurring_plans p JOIN surge.saved_payment_methods m ON m.id = p.saved_method_id
                WHERE p.id = $1""",
            plan_id,
        )
        refresh = getattr(self._processors.get(row["processor"]) if row else None, "refresh_payment_method", None)
        if row is None or refresh is None:
            return
        stored = stored_details(row)
        current = await refresh(stored)
        if current is None or current == stored:
            return
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(
                """UPDATE surge.saved_payment_methods
                      SET payment_method_reference = $2, brand = $3, last4 = $4, exp_month = $5, exp_year = $6,
                          updated_at = now()
                    WHERE id = $1""",
                row["id"],
                current.payment_method_reference,
                current.brand,
                current.last4,
                current.exp_month,
                current.exp_year,
            )
            await connection.execute(
                """UPDATE surge.recurring_installments SET next_attempt_at = now(), updated_at = now()
                    WHERE plan_id = $1 AND status = 'retrying'""",
                plan_id,
            )
        _logger.info("plan %s: the processor updated its card (%s); retrying now", plan_id, current.last4)
        self._loop.wake()

    # -- submit -----------------------------------------------------------------------------------------------------

    async def _claim_and_submit(self) -> int:
        room = min(self.limits.claim_batch_max, self.limits.in_flight_max - len(self._tasks))
        if room <= 0:
            return 0
        rows = await self._pool.fetch(
            """WITH due AS (
                   SELECT i.plan_id, i.period FROM surge.recurring_installments i
                     JOIN surge.recurring_plans p ON p.id = i.plan_id
                    WHERE i.status IN ('due', 'retrying', 'charging') AND i.next_attempt_at <= now()
                      AND (i.status = 'charging' OR p.status IN ('active', 'past_due'))
                      -- A plan's periods in order (catching up after downtime, a limit reached mid-way): one
                      -- waits while an earlier one is due or being charged; one retrying days later does not.
                      AND NOT EXISTS (SELECT 1 FROM surge.recurring_installments j
                                       WHERE j.plan_id = i.plan_id AND j.period < i.period
                                         AND j.status IN ('due', 'charging'))
                    ORDER BY i.next_attempt_at
                    LIMIT $1 FOR UPDATE OF i SKIP LOCKED)
               UPDATE surge.recurring_installments i
                  SET attempts = CASE WHEN i.status = 'charging' THEN i.attempts ELSE i.attempts + 1 END,
                      status = 'charging', updated_at = now(),
                      next_attempt_at = now() + make_interval(secs => CASE WHEN i.donation_id IS NULL THEN $2::float8
                                                                           ELSE $3::float8 END)
                 FROM due, surge.recurring_plans p, surge.saved_payment_methods m
                WHERE (i.plan_id, i.period) = (due.plan_id, due.period) AND p.id = i.plan_id
                  AND m.id = p.saved_method_id
            RETURNING i.plan_id, i.period, i.attempts AS attempt, i.amount_minor, i.donation_id, p.campaign,
                      p.currency, p.donor, p.refcode, m.customer_reference, m.payment_method_reference""",
            room,
            self.limits.lease_s,
            self.limits.recheck_s,
        )
        if rows and not self._key_ready:
            await ensure_recurring_key(self._pool)
            self._key_ready = True
        for row in rows:
            claimed = ClaimedInstallment(**dict(row))
            if claimed.donation_id is not None:
                continue  # its donation is in the pipeline: the resolve step settles it when it is final
            task = asyncio.create_task(self._submit(claimed))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(rows)

    async def _submit(self, claimed: ClaimedInstallment) -> None:
        try:
            await self._submit_once(claimed)
        except Exception:
            # The installment keeps its lease and is submitted again (same key) when it ends.
            _logger.exception("installment %s/%s failed to submit", claimed.plan_id, claimed.period)

    async def _submit_once(self, claimed: ClaimedInstallment) -> None:
        campaign = await self._campaigns.get(claimed.campaign)
        if campaign is None:
            raise RuntimeError(f"plan {claimed.plan_id} names unknown campaign {claimed.campaign}")
        key = installment_idempotency_key(claimed.plan_id, claimed.period, claimed.attempt)
        try:
            outcome = await self._pipeline.submit(RECURRING_KEY, key, installment_request(claimed), campaign, None)
        except OverloadError:
            await release(self._pool, claimed, self.limits.overload_delay_s)
            return
        if isinstance(outcome, Refusal):
            await self._refused(claimed, outcome)
            return
        await record_donation(self._pool, claimed, outcome, self.limits.recheck_s)
        self._loop.wake()  # a final outcome is resolved by the next round

    async def _refused(self, claimed: ClaimedInstallment, refusal: Refusal) -> None:
        if refusal.reason is RefusalReason.IDEMPOTENCY_IN_PROGRESS:
            # Another submission of this very attempt is under way (or was, in a process that died): wait for it.
            if refusal.donation is not None:
                await record_donation(self._pool, claimed, refusal.donation, self.limits.recheck_s)
            return
        reason = SKIP_REASONS.get(refusal.reason)
        if reason is None:
            raise RuntimeError(f"installment {claimed.plan_id}/{claimed.period} refused: {refusal.reason}")
        await skip_installment(self._pool, claimed.plan_id, claimed.period, claimed.attempt, claimed.campaign, reason)


async def materialise_due(pool: asyncpg.Pool, batch_max: int) -> int:
    """Give each plan whose next period is due that period's installment, and move the plan on to the next one."""
    made: int = await pool.fetchval(
        # Every value comes from the locked rows (``due``), never from a second read of the table: under READ
        # COMMITTED a row another process moved on after this statement's snapshot is returned by FOR UPDATE in
        # its new version, while a plain read would still see the old one and skip the period in between.
        """WITH due AS (
               SELECT id, next_period, next_due_at, amount_minor, installments_max, interval, anchor_at
                 FROM surge.recurring_plans
                WHERE status IN ('active', 'past_due') AND next_due_at <= now()
                ORDER BY next_due_at LIMIT $1 FOR UPDATE SKIP LOCKED),
           inserted AS (
               INSERT INTO surge.recurring_installments (plan_id, period, due_at, amount_minor, status,
                                                         next_attempt_at)
               SELECT id, next_period, next_due_at, amount_minor, 'due', next_due_at FROM due
               ON CONFLICT (plan_id, period) DO NOTHING),
           moved AS (
               UPDATE surge.recurring_plans p
                  SET next_period = due.next_period + 1, updated_at = now(),
                      next_due_at = CASE WHEN due.installments_max IS NOT NULL
                                              AND due.next_period + 1 >= due.installments_max THEN NULL
                                         ELSE surge.recurring_period_due(due.interval, due.anchor_at,
                                                                         due.next_period + 1)
                                    END
                 FROM due WHERE p.id = due.id RETURNING 1)
           SELECT count(*) FROM moved""",
        batch_max,
    )
    return made


async def release(pool: asyncpg.Pool, claimed: ClaimedInstallment, delay_s: float) -> None:
    """Give a claim back unsubmitted (the pipeline shed it): its attempt number is given back too."""
    await pool.execute(
        """UPDATE surge.recurring_installments
              SET status = CASE WHEN attempts <= 1 THEN 'due' ELSE 'retrying' END, attempts = attempts - 1,
                  next_attempt_at = now() + make_interval(secs => $4::float8), updated_at = now()
            WHERE plan_id = $1 AND period = $2 AND attempts = $3 AND status = 'charging' AND donation_id IS NULL""",
        claimed.plan_id,
        claimed.period,
        claimed.attempt,
        delay_s,
    )


async def record_donation(
    pool: asyncpg.Pool, claimed: ClaimedInstallment, donation: Donation, recheck_s: float
) -> None:
    await pool.execute(
        """UPDATE surge.recurring_installments
              SET donation_id = $4, next_attempt_at = now() + make_interval(secs => $5::float8), updated_at = now()
            WHERE plan_id = $1 AND period = $2 AND attempts = $3 AND status = 'charging'""",
        claimed.plan_id,
        claimed.period,
        claimed.attempt,
        donation.id,
        recheck_s,
    )
