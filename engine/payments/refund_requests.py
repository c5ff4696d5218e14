"""A person's refund request, the one way for the API and the dashboard: reserved with its audit record in one
transaction (durable before the processor is called), then sent and its answer recorded (engine/payments/refunds.py).

Whatever happens after the reservation — a timeout, a crash, a processor not configured in this process — the
refund worker finishes it (engine/payments/refund_recovery.py); a replay of the same idempotency key returns the
refund as it stands.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from adapters.base import Processor
from engine.audit import Actor, AuditAction, record
from engine.payments.refunds import Refund, apply_refund_result, lease_seconds, reserve_refund, send_refund
from ledger.accounts import AccountDirectory


async def request_refund(
    pool: asyncpg.Pool,
    directory: AccountDirectory,
    processors: Sequence[Processor],
    *,
    api_key_id: str,
    idempotency_key: str,
    donation_id: str,
    amount_minor: int | None,
    timeout_s: float,
    actor: Actor,
) -> Refund:
    """Raises :class:`engine.payments.refunds.RefundRefusedError` when the refund cannot be made (nothing written)."""
    async with pool.acquire() as connection, connection.transaction():
        claim = await reserve_refund(
            connection, api_key_id, idempotency_key, donation_id, amount_minor, lease_seconds(timeout_s)
        )
        if claim.created:
            changes = {
                "refund": claim.refund.id,
                "amount": claim.refund.amount_minor,
                "currency": claim.refund.currency,
            }
            await record(connection, actor, AuditAction.REFUND_REQUESTED, claim.refund.donation_id, changes)
    refund = claim.refund
    processor = next((p for p in processors if p.name == claim.processor), None)
    if claim.created and processor is not None:
        result = await send_refund(processor, refund, claim.charge_reference, timeout_s)
        async with pool.acquire() as connection:
            refund = await apply_refund_result(connection, directory, refund.id, result)
    return refund
