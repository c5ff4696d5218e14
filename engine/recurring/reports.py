"""Recurring reports for finance: per campaign, the plans and the money they bring, and what became of installments.

- ``active_plans``: plans charged each period (active or past due, not paused);
- ``monthly_recurring_minor``: those plans' amounts as a monthly figure (a weekly gift counts 52/12 times, in integer
  arithmetic rounded down, as money is never a float);
- installments ``succeeded`` / ``failed`` (dunning gave up) / ``skipped`` (limit, cancelled plan) / ``open``;
- ``churn``: plans cancelled in the last 30 days over plans that were live 30 days ago.
"""

from __future__ import annotations

from typing import Any

import asyncpg


async def by_campaign(connection: asyncpg.Connection | asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await connection.fetch(
        """WITH plan_figures AS (
               SELECT campaign, currency,
                      count(*) FILTER (WHERE status IN ('active', 'past_due')) AS active_plans,
                      count(*) FILTER (WHERE status = 'past_due') AS past_due_plans,
                      count(*) FILTER (WHERE status = 'paused') AS paused_plans,
                      coalesce(sum(CASE WHEN interval = 'month' THEN amount_minor ELSE amount_minor * 52 / 12 END)
                               FILTER (WHERE status IN ('active', 'past_due')), 0)::bigint AS monthly_recurring_minor,
                      count(*) FILTER (WHERE status = 'cancelled' AND cancelled_at >= now() - interval '30 days')
                          AS cancelled_30d,
                      count(*) FILTER (WHERE created_at < now() - interval '30 days'
                                         AND (cancelled_at IS NULL OR cancelled_at >= now() - interval '30 days'))
                          AS live_30d_ago
                 FROM surge.recurring_plans GROUP BY campaign, currency),
           installment_figures AS (
               SELECT p.campaign,
                      count(*) FILTER (WHERE i.status = 'succeeded') AS succeeded,
                      count(*) FILTER (WHERE i.status = 'failed') AS failed,
                      count(*) FILTER (WHERE i.status = 'skipped') AS skipped,
                      count(*) FILTER (WHERE i.status IN ('due', 'retrying', 'charging')) AS open
                 FROM surge.recurring_installments i JOIN surge.recurring_plans p ON p.id = i.plan_id
                GROUP BY p.campaign)
           SELECT f.*, coalesce(i.succeeded, 0) AS succeeded, coalesce(i.failed, 0) AS failed,
                  coalesce(i.skipped, 0) AS skipped, coalesce(i.open, 0) AS open
             FROM plan_figures f LEFT JOIN installment_figures i USING (campaign)
            ORDER BY f.campaign, f.currency"""
    )
    return [
        {
            "campaign": row["campaign"],
            "currency": row["currency"].lower(),
            "active_plans": row["active_plans"],
            "past_due_plans": row["past_due_plans"],
            "paused_plans": row["paused_plans"],
            "monthly_recurring_amount": row["monthly_recurring_minor"],
            "installments": {
                "succeeded": row["succeeded"],
                "failed": row["failed"],
                "skipped": row["skipped"],
                "open": row["open"],
            },
            "cancelled_last_30_days": row["cancelled_30d"],
            # A ratio, not money: a rounded decimal is fine here.
            "churn_30_days": round(row["cancelled_30d"] / row["live_30d_ago"], 4) if row["live_30d_ago"] else None,
        }
        for row in rows
    ]


async def installments_of(connection: asyncpg.Connection | asyncpg.Pool, plan_id: str) -> list[dict[str, Any]]:
    rows = await connection.fetch(
        """SELECT i.period, i.due_at, i.amount_minor, i.status, i.attempts, i.donation_id, i.outcome_reason,
                  i.next_attempt_at,
                  coalesce(json_agg(json_build_object('attempt', a.attempt, 'donation', a.donation_id,
                                                      'outcome', a.outcome, 'reason', a.reason,
                                                      'created', a.created_at) ORDER BY a.attempt)
                           FILTER (WHERE a.attempt IS NOT NULL), '[]') AS attempt_list
             FROM surge.recurring_installments i
             LEFT JOIN surge.recurring_attempts a USING (plan_id, period)
            WHERE i.plan_id = $1 GROUP BY i.plan_id, i.period ORDER BY i.period""",
        plan_id,
    )
    return [
        {
            "object": "recurring_installment",
            "period": row["period"],
            "due": row["due_at"].isoformat(),
            "amount": row["amount_minor"],
            "status": row["status"],
            "attempts": row["attempt_list"],
            "donation": row["donation_id"],
            "reason": row["outcome_reason"],
            "next_attempt": row["next_attempt_at"].isoformat() if row["status"] in ("due", "retrying") else None,
        }
        for row in rows
    ]


async def notices(
    connection: asyncpg.Connection | asyncpg.Pool, campaign: str | None, limit: int
) -> list[dict[str, Any]]:
    rows = await connection.fetch(
        """SELECT n.id, n.plan_id, n.period, n.audience, n.kind, n.message, n.created_at, p.campaign, p.donor_email
             FROM surge.recurring_notices n JOIN surge.recurring_plans p ON p.id = n.plan_id
            WHERE ($1::text IS NULL OR p.campaign = $1) ORDER BY n.id DESC LIMIT $2""",
        campaign,
        limit,
    )
    return [
        {
            "object": "recurring_notice",
            "plan": row["plan_id"],
            "period": row["period"],
            "audience": row["audience"],
            "recipient": row["donor_email"] if row["audience"] == "donor" else row["campaign"],
            "kind": row["kind"],
            "message": row["message"],
            "created": row["created_at"].isoformat(),
        }
        for row in rows
    ]
