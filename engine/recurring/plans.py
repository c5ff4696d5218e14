"""Plans: creating them, reading them, and the changes donors and finance make.

A plan is created on a saved method (engine/recurring/saved_methods.py): the donor's payment method attached to a
processor customer for off-session use. Only the processor's references and the card's brand, last four and expiry
are stored. Period ``n`` of a plan is due at ``anchor_at + n`` weeks or months; the scheduler
(engine/recurring/scheduler.py) materialises each period once and charges it through the donation pipeline.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import asyncpg

from adapters.base import SavedMethodDetails
from engine.campaigns import Campaign
from engine.pipeline.donation_request import DonationRequest

INTERVALS = ("week", "month")
INSTALLMENTS_MAX = 1_000
OPEN_PLAN_STATUSES = ("active", "past_due", "paused")
RECURRING_KEY_ID = "key_recurring"  # the internal form key installments and Quick Donate gifts are submitted under

PLAN_COLUMNS = """p.id, p.campaign, p.saved_method_id, p.amount_minor, p.currency, p.interval, p.installments_max,
    p.donor, p.donor_email, p.refcode, p.status, p.anchor_at, p.next_period, p.next_due_at, p.cancel_reason,
    p.created_at, p.updated_at, p.cancelled_at,
    m.processor, m.customer_reference, m.payment_method_reference, m.brand, m.last4, m.exp_month, m.exp_year"""


def new_plan_id() -> str:
    return "plan_" + secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class Plan:
    id: str
    campaign: str
    saved_method_id: str
    amount_minor: int
    currency: str
    interval: str
    installments_max: int | None
    donor: dict[str, Any]
    donor_email: str
    refcode: str | None
    status: str
    anchor_at: datetime
    next_period: int
    next_due_at: datetime | None
    cancel_reason: str | None
    created_at: datetime
    updated_at: datetime
    cancelled_at: datetime | None
    processor: str
    customer_reference: str
    payment_method_reference: str
    brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Plan:
        return cls(**{name: row[name] for name in cls.__slots__})

    @property
    def method(self) -> SavedMethodDetails:
        return SavedMethodDetails(
            self.customer_reference,
            self.payment_method_reference,
            self.brand,
            self.last4,
            self.exp_month,
            self.exp_year,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "recurring_plan",
            "status": self.status,
            "campaign": self.campaign,
            "amount": self.amount_minor,
            "currency": self.currency.lower(),
            "interval": self.interval,
            "installments": self.installments_max,
            "refcode": self.refcode,
            "donor": {
                "first_name": self.donor.get("first_name"),
                "last_name": self.donor.get("last_name"),
                "email": self.donor_email,
            },
            "payment_method": saved_method_json(
                self.saved_method_id, self.processor, self.brand, self.last4, self.exp_month, self.exp_year
            ),
            "anchor": self.anchor_at.isoformat(),
            "next_period": self.next_period,
            "next_due": self.next_due_at.isoformat() if self.next_due_at else None,
            "cancel_reason": self.cancel_reason,
            "created": self.created_at.isoformat(),
            "cancelled": self.cancelled_at.isoformat() if self.cancelled_at else None,
        }


def saved_method_json(
    method_id: str, processor: str, brand: str | None, last4: str | None, exp_month: int | None, exp_year: int | None
) -> dict[str, Any]:
    return {
        "id": method_id,
        "object": "saved_payment_method",
        "processor": processor,
        "brand": brand,
        "last4": last4,
        "exp_month": exp_month,
        "exp_year": exp_year,
    }


async def ensure_recurring_key(connection: asyncpg.Connection | asyncpg.Pool) -> None:
    """The internal form key (its secret is random bytes nobody kept). Made on the first plan rather than by a
    migration: bootstrap reads an empty key table as a new installation."""
    await connection.execute(
        """INSERT INTO surge.api_keys (id, secret_hash, role, label)
           VALUES ($1, $2, 'form', 'recurring installments and Quick Donate (internal, no secret)')
           ON CONFLICT (id) DO NOTHING""",
        RECURRING_KEY_ID,
        secrets.token_bytes(32),
    )


async def create_plan(
    pool: asyncpg.Pool,
    campaign: Campaign,
    request: DonationRequest,
    saved_method_id: str,
    interval: str,
    installments_max: int | None,
    start_at: datetime | None = None,
    idempotency: tuple[str, str] | None = None,
) -> Plan:
    """A plan whose first period is due at ``start_at`` (now by default): the scheduler charges it. With
    ``idempotency`` (api key id, idempotency key) a second creation returns the first plan."""
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {INTERVALS}")
    anchor = start_at or datetime.now(UTC)
    plan_id = new_plan_id()
    async with pool.acquire() as connection, connection.transaction():
        await ensure_recurring_key(connection)
        await connection.execute(
            """INSERT INTO surge.recurring_plans (id, campaign, saved_method_id, amount_minor, currency, interval,
                   installments_max, donor, donor_email, refcode, status, anchor_at, next_due_at, api_key_id,
                   idempotency_key)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, lower($9), $10, 'active', $11, $11, $12, $13)
               ON CONFLICT (api_key_id, idempotency_key) DO NOTHING""",
            plan_id,
            campaign.slug,
            saved_method_id,
            request.amount_minor,
            request.currency,
            interval,
            installments_max,
            request.donor,
            request.donor["email"],
            request.refcode,
            anchor,
            idempotency[0] if idempotency else None,
            idempotency[1] if idempotency else None,
        )
        if idempotency is not None:
            plan_id = await connection.fetchval(
                "SELECT id FROM surge.recurring_plans WHERE api_key_id = $1 AND idempotency_key = $2", *idempotency
            )
        plan = await fetch_plan(connection, plan_id)
    if plan is None:
        raise RuntimeError(f"plan {plan_id} vanished after insert")
    return plan


async def plan_by_idempotency_key(
    connection: asyncpg.Connection | asyncpg.Pool, api_key_id: str, key: str
) -> Plan | None:
    plan_id = await connection.fetchval(
        "SELECT id FROM surge.recurring_plans WHERE api_key_id = $1 AND idempotency_key = $2", api_key_id, key
    )
    return None if plan_id is None else await fetch_plan(connection, plan_id)


async def fetch_plan(connection: asyncpg.Connection | asyncpg.Pool, plan_id: str) -> Plan | None:
    row = await connection.fetchrow(
        f"""SELECT {PLAN_COLUMNS} FROM surge.recurring_plans p
              JOIN surge.saved_payment_methods m ON m.id = p.saved_method_id WHERE p.id = $1""",
        plan_id,
    )
    return Plan.from_row(row) if row else None


async def list_plans(
    connection: asyncpg.Connection | asyncpg.Pool,
    *,
    campaign: str | None = None,
    status: str | None = None,
    email: str | None = None,
    limit: int = 100,
    starting_after: str | None = None,
) -> list[Plan]:
    rows = await connection.fetch(
        f"""SELECT {PLAN_COLUMNS} FROM surge.recurring_plans p
              JOIN surge.saved_payment_methods m ON m.id = p.saved_method_id
             WHERE ($1::text IS NULL OR p.campaign = $1) AND ($2::text IS NULL OR p.status = $2)
               AND ($3::text IS NULL OR p.donor_email = lower($3))
               AND ($4::text IS NULL OR (p.created_at, p.id) < (SELECT created_at, id FROM surge.recurring_plans
                                                                 WHERE id = $4))
             ORDER BY p.created_at DESC, p.id DESC LIMIT $5""",
        campaign,
        status,
        email,
        starting_after,
        limit,
    )
    return [Plan.from_row(row) for row in rows]


class ChangeOutcome(StrEnum):
    CHANGED = "changed"
    NOT_FOUND = "not_found"
    NOT_ALLOWED = "not_allowed"  # the plan's status does not allow it (e.g. resuming a cancelled plan)


async def cancel_plan(pool: asyncpg.Pool, plan_id: str, reason: str) -> ChangeOutcome:
    """Cancel: nothing more is materialised and periods still waiting are skipped; a charge already sent finishes."""
    async with pool.acquire() as connection, connection.transaction():
        status = await connection.fetchval("SELECT status FROM surge.recurring_plans WHERE id = $1 FOR UPDATE", plan_id)
        if status is None:
            return ChangeOutcome.NOT_FOUND
        if status not in OPEN_PLAN_STATUSES:
            return ChangeOutcome.NOT_ALLOWED
        await end_plan(connection, plan_id, "cancelled", reason)
    return ChangeOutcome.CHANGED


async def end_plan(connection: asyncpg.Connection, plan_id: str, status: str, reason: str | None) -> None:
    """Cancel or complete a plan inside the caller's transaction; waiting periods are skipped with the reason."""
    await connection.execute(
        """UPDATE surge.recurring_plans
              SET status = $2, cancel_reason = $3, next_due_at = NULL, updated_at = now(),
                  cancelled_at = CASE WHEN $2 = 'cancelled' THEN now() END
            WHERE id = $1""",
        plan_id,
        status,
        reason,
    )
    await connection.execute(
        """UPDATE surge.recurring_installments
              SET status = 'skipped', outcome_reason = 'plan_' || $2, updated_at = now()
            WHERE plan_id = $1 AND status IN ('due', 'retrying')""",
        plan_id,
        status,
    )


async def pause_plan(pool: asyncpg.Pool, plan_id: str, paused: bool) -> ChangeOutcome:
    """Pause (nothing is materialised or charged) or resume. A resumed plan's periods missed while paused are not
    charged: its next period is the first due from now on."""
    async with pool.acquire() as connection, connection.transaction():
        row = await connection.fetchrow(
            "SELECT status, interval, anchor_at, next_period FROM surge.recurring_plans WHERE id = $1 FOR UPDATE",
            plan_id,
        )
        if row is None:
            return ChangeOutcome.NOT_FOUND
        if paused and row["status"] in ("active", "past_due"):
            await connection.execute(
                "UPDATE surge.recurring_plans SET status = 'paused', updated_at = now() WHERE id = $1", plan_id
            )
            return ChangeOutcome.CHANGED
        if not paused and row["status"] == "paused":
            # Skip the periods that fell due while paused: the next period is the first due from now on.
            await connection.execute(
                """UPDATE surge.recurring_plans p
                      SET status = 'active', updated_at = now(), next_period = s.n,
                          next_due_at = CASE WHEN p.installments_max IS NOT NULL AND s.n >= p.installments_max
                                             THEN NULL
                                             ELSE surge.recurring_period_due(p.interval, p.anchor_at, s.n) END
                     FROM (SELECT min(n) AS n FROM surge.recurring_plans q,
                                  generate_series(q.next_period, q.next_period + 10000) AS n
                            WHERE q.id = $1 AND surge.recurring_period_due(q.interval, q.anchor_at, n) >= now()) s
                    WHERE p.id = $1""",
                plan_id,
            )
            return ChangeOutcome.CHANGED
        return ChangeOutcome.NOT_ALLOWED


async def change_amount(pool: asyncpg.Pool, plan_id: str, amount_minor: int) -> ChangeOutcome:
    """From the next period materialised on; a period already due keeps the amount it was due with."""
    status = await pool.fetchval(
        """UPDATE surge.recurring_plans SET amount_minor = $2, updated_at = now()
            WHERE id = $1 AND status IN ('active', 'past_due', 'paused') RETURNING status""",
        plan_id,
        amount_minor,
    )
    if status is not None:
        return ChangeOutcome.CHANGED
    exists = await pool.fetchval("SELECT true FROM surge.recurring_plans WHERE id = $1", plan_id)
    return ChangeOutcome.NOT_ALLOWED if exists else ChangeOutcome.NOT_FOUND


async def campaign_on_limit(connection: asyncpg.Connection | asyncpg.Pool, campaign: str) -> str:
    """``continue`` (default) or ``stop``: what a plan does when an installment is skipped for the limit."""
    value = await connection.fetchval(
        "SELECT on_limit FROM surge.recurring_campaign_settings WHERE campaign = $1", campaign
    )
    return str(value or "continue")
