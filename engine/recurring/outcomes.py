"""What becomes of an installment attempt (engine/recurring/scheduler.py submits them): charged; declined and
retried on the dunning schedule or given up (the plan cancelled); or skipped (intake refused it, e.g. past the
donor's election limit), the plan going on or stopping by the campaign's rule. Each attempt and outcome is recorded
for finance, and what the donor and the campaign must be told is written as a notice — all in one transaction with
the installment's new state, so an outcome is recorded once however often it is looked at.
"""

from __future__ import annotations

import asyncpg

from engine.recurring.dunning import CARD_UPDATE_CODES, Next, RetrySchedule
from engine.recurring.plans import campaign_on_limit, end_plan


async def skip_installment(
    pool: asyncpg.Pool, plan_id: str, period: int, attempt: int, campaign: str, reason: str
) -> None:
    """The period is skipped (no donation was made); donor and campaign are told; the plan goes on or stops."""
    async with pool.acquire() as connection, connection.transaction():
        skipped = await connection.fetchval(
            """UPDATE surge.recurring_installments
                  SET status = 'skipped', outcome_reason = $4, updated_at = now()
                WHERE plan_id = $1 AND period = $2 AND attempts = $3 AND status = 'charging' RETURNING true""",
            plan_id,
            period,
            attempt,
            reason,
        )
        if not skipped:
            return
        await _record_attempt(connection, plan_id, period, attempt, None, "skipped", reason)
        message = f"The installment of period {period} was skipped: {reason.replace('_', ' ')}."
        await add_notices(connection, plan_id, period, "installment_skipped", message)
        if reason == "contribution_limit_exceeded" and await campaign_on_limit(connection, campaign) == "stop":
            await end_plan(connection, plan_id, "cancelled", "limit_reached")
        else:
            await _complete_if_done(connection, plan_id)


async def resolve_finished(pool: asyncpg.Pool, batch_max: int, schedule: RetrySchedule) -> tuple[int, list[str]]:
    """Settle installments whose donation is final: succeeded, or declined → retry later or give up. Returns how
    many, and the plans whose decline a card update may cure (their saved method is to be read again)."""
    async with pool.acquire() as connection, connection.transaction():
        rows = await connection.fetch(
            """SELECT i.plan_id, i.period, i.attempts, i.donation_id, d.status, d.decline_code, d.failure_message,
                      p.campaign
                 FROM surge.recurring_installments i
                 JOIN surge.donations d ON d.id = i.donation_id
                 JOIN surge.recurring_plans p ON p.id = i.plan_id
                WHERE i.status = 'charging' AND d.status IN ('succeeded', 'declined', 'failed')
                LIMIT $1 FOR UPDATE OF i SKIP LOCKED""",
            batch_max,
        )
        card_checks = [row["plan_id"] for row in rows if await _resolve(connection, row, schedule)]
    return len(rows), card_checks


async def _resolve(connection: asyncpg.Connection, row: asyncpg.Record, schedule: RetrySchedule) -> bool:
    """True when the attempt was declined for a reason a card update may cure and the period will be retried."""
    plan_id, period, attempt = row["plan_id"], row["period"], row["attempts"]
    if row["status"] == "succeeded":
        await _record_attempt(connection, plan_id, period, attempt, row["donation_id"], "succeeded", None)
        await connection.execute(
            """UPDATE surge.recurring_installments SET status = 'succeeded', outcome_reason = NULL, updated_at = now()
                WHERE plan_id = $1 AND period = $2""",
            plan_id,
            period,
        )
        await connection.execute(
            """UPDATE surge.recurring_plans SET status = 'active', updated_at = now()
                WHERE id = $1 AND status = 'past_due'""",
            plan_id,
        )
        # No notice of its own: the installment's receipt says it, with the plan's manage link.
        await _complete_if_done(connection, plan_id)
        return False
    code = row["decline_code"] or row["status"]
    await _record_attempt(connection, plan_id, period, attempt, row["donation_id"], row["status"], code)
    decision = schedule.decide(attempt, row["decline_code"])
    if decision.next is Next.RETRY and decision.delay is not None:
        await connection.execute(
            """UPDATE surge.recurring_installments
                  SET status = 'retrying', donation_id = NULL, outcome_reason = $3, updated_at = now(),
                      next_attempt_at = now() + make_interval(secs => $4::float8)
                WHERE plan_id = $1 AND period = $2""",
            plan_id,
            period,
            code,
            decision.delay.total_seconds(),
        )
        await connection.execute(
            """UPDATE surge.recurring_plans SET status = 'past_due', updated_at = now()
                WHERE id = $1 AND status = 'active'""",
            plan_id,
        )
        message = f"Your recurring gift could not be charged ({code.replace('_', ' ')}); we will try again."
        await add_notices(connection, plan_id, period, f"payment_failed_{attempt}", message, campaign=False)
        return code in CARD_UPDATE_CODES
    await connection.execute(
        """UPDATE surge.recurring_installments SET status = 'failed', outcome_reason = $3, updated_at = now()
            WHERE plan_id = $1 AND period = $2""",
        plan_id,
        period,
        decision.reason,
    )
    await end_plan(connection, plan_id, "cancelled", decision.reason)
    message = f"The recurring gift was cancelled: {decision.reason.replace('_', ' ')}."
    await add_notices(connection, plan_id, period, "plan_cancelled", message)
    return False


async def _record_attempt(
    connection: asyncpg.Connection,
    plan_id: str,
    period: int,
    attempt: int,
    donation_id: str | None,
    outcome: str,
    reason: str | None,
) -> None:
    await connection.execute(
        """INSERT INTO surge.recurring_attempts (plan_id, period, attempt, donation_id, outcome, reason)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (plan_id, period, attempt) DO NOTHING""",
        plan_id,
        period,
        attempt,
        donation_id,
        outcome,
        reason,
    )


async def _complete_if_done(connection: asyncpg.Connection, plan_id: str) -> None:
    """A plan of N installments whose last period is final is completed."""
    await connection.execute(
        """UPDATE surge.recurring_plans p SET status = 'completed', updated_at = now()
            WHERE p.id = $1 AND p.status IN ('active', 'past_due') AND p.next_due_at IS NULL
              AND NOT EXISTS (SELECT 1 FROM surge.recurring_installments i
                               WHERE i.plan_id = p.id AND i.status IN ('due', 'retrying', 'charging'))""",
        plan_id,
    )


async def add_notices(
    connection: asyncpg.Connection,
    plan_id: str,
    period: int | None,
    kind: str,
    message: str,
    *,
    donor: bool = True,
    campaign: bool = True,
) -> None:
    """What the donor and the campaign are told (kept once per plan, period, audience and kind)."""
    audiences = [a for a, wanted in (("donor", donor), ("campaign", campaign)) if wanted]
    await connection.execute(
        """INSERT INTO surge.recurring_notices (plan_id, period, audience, kind, message)
           SELECT $1, $2, a, $3, $4 FROM unnest($5::text[]) AS a
           ON CONFLICT DO NOTHING""",
        plan_id,
        period,
        kind,
        message,
        audiences,
    )
