"""Saved payment methods: a donor's card attached to a processor customer for off-session charges
(``adapters.base.SavesPaymentMethods``), recorded by its references and display details only, under the donor's
email-verified profile; and deleting one (detached at the processor, plans on it cancelled)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import asyncpg

from adapters.base import Processor, SavedMethodDetails, SaveResult, SavesPaymentMethods, SaveStatus
from engine.recurring.plans import end_plan


def stored_details(row: asyncpg.Record) -> SavedMethodDetails:
    """The processor's references and the card's display details, as a saved method's row holds them."""
    return SavedMethodDetails(
        row["customer_reference"],
        row["payment_method_reference"],
        row["brand"],
        row["last4"],
        row["exp_month"],
        row["exp_year"],
    )


def new_saved_method_id() -> str:
    return "spm_" + secrets.token_hex(12)


class PlanProblem(StrEnum):
    NO_SAVING_PROCESSOR = "no_saving_processor"  # no configured processor can save payment methods
    CARD_DECLINED = "card_declined"  # the processor refused to attach the card
    SAVE_FAILED = "save_failed"  # invalid token, or the processor did not answer


@dataclass(frozen=True, slots=True)
class PlanRefused:
    problem: PlanProblem
    message: str
    decline_code: str | None = None


def saving_processor(processors: Sequence[Processor]) -> SavesPaymentMethods | None:
    """The first processor (in priority order) that can save payment methods."""
    for processor in processors:
        if callable(getattr(processor, "save_payment_method", None)):
            return processor  # type: ignore[return-value]
    return None


async def save_method(
    pool: asyncpg.Pool, processor: SavesPaymentMethods, payment_method: str, donor: dict[str, Any]
) -> tuple[str, SavedMethodDetails] | PlanRefused:
    """Save the donor's method at the processor and record its references; (saved method id, details)."""
    email = str(donor["email"])
    name = f"{donor['first_name']} {donor['last_name']}"
    result: SaveResult = await processor.save_payment_method(payment_method, email, name)
    if result.status is not SaveStatus.SAVED or result.method is None:
        problem = PlanProblem.CARD_DECLINED if result.status is SaveStatus.DECLINED else PlanProblem.SAVE_FAILED
        return PlanRefused(problem, result.message or "the payment method could not be saved", result.decline_code)
    method = result.method
    method_id = new_saved_method_id()
    async with pool.acquire() as connection, connection.transaction():
        profile_id = await upsert_profile(connection, email)
        await connection.execute(
            """INSERT INTO surge.saved_payment_methods (id, profile_id, processor, customer_reference,
                   payment_method_reference, brand, last4, exp_month, exp_year, donor)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb)""",
            method_id,
            profile_id,
            processor.name,
            method.customer_reference,
            method.payment_method_reference,
            method.brand,
            method.last4 if method.last4 and method.last4.isdigit() and len(method.last4) == 4 else None,
            method.exp_month,
            method.exp_year,
            donor,
        )
    return method_id, method


async def upsert_profile(connection: asyncpg.Connection, email: str) -> str:
    """The donor profile of this email (unverified until the donor follows a signed link)."""
    profile_id: str = await connection.fetchval(
        """INSERT INTO surge.donor_profiles (id, email) VALUES ($1, lower($2))
           ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email RETURNING id""",
        "dpr_" + secrets.token_hex(12),
        email.strip(),
    )
    return profile_id


async def delete_saved_method(
    pool: asyncpg.Pool, processors: dict[str, Processor], profile_id: str, method_id: str
) -> bool:
    """The donor deletes a saved card: detached at the processor, never charged again; plans on it are cancelled."""
    async with pool.acquire() as connection, connection.transaction():
        row = await connection.fetchrow(
            """UPDATE surge.saved_payment_methods SET deleted_at = now(), updated_at = now()
                WHERE id = $1 AND profile_id = $2 AND deleted_at IS NULL
            RETURNING processor, customer_reference, payment_method_reference, brand, last4, exp_month, exp_year""",
            method_id,
            profile_id,
        )
        if row is None:
            return False
        for plan_id in await connection.fetchval(
            """SELECT coalesce(array_agg(id), '{}') FROM surge.recurring_plans
                WHERE saved_method_id = $1 AND status IN ('active', 'past_due', 'paused')""",
            method_id,
        ):
            await end_plan(connection, plan_id, "cancelled", "payment_method_deleted")
    processor = processors.get(row["processor"])
    detach = getattr(processor, "detach_payment_method", None)
    if detach is not None:
        # After the commit: a failed detach leaves a customer at the processor that Surge will never charge.
        await detach(stored_details(row))
    return True
