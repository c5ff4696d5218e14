"""A claimed queue row: look it up before charging when a charge may already exist, never charge blindly.

A row whose lease expired while ``charging`` (crash, timeout) or that is ``pending`` is first looked up at the
processor by its idempotency key, and charged only when the processor has no record of it; a ``queued`` row goes to
whichever processor has room.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import asyncpg

from adapters.base import ChargeStatus
from engine.pipeline.charger import Charger
from engine.pipeline.donations import Donation
from engine.pipeline.review import flag_for_review

_logger = logging.getLogger(__name__)


async def process_claimed(pool: asyncpg.Pool, charger: Charger, donation: Donation, previous_status: str) -> None:
    try:
        await _process(pool, charger, donation, previous_status)
    except Exception:
        # The row keeps its lease and is retried after it expires.
        _logger.exception("processing queued donation %s failed", donation.id)


def may_have_charge(donation: Donation, previous_status: str) -> bool:
    """A claimed row a processor may already hold a charge for: it was sent (or about to be) to a named processor.
    Any other row was never sent anywhere."""
    return previous_status in ("charging", "pending") and donation.processor is not None


async def _process(pool: asyncpg.Pool, charger: Charger, donation: Donation, previous_status: str) -> None:
    if may_have_charge(donation, previous_status):
        chosen = charger.by_name.get(donation.processor or "")
        if chosen is None:
            _logger.error("donation %s was sent to unknown processor %s", donation.id, donation.processor)
            return
        if not chosen[1].try_acquire():
            await reschedule(pool, donation.id, previous_status)
            return
        found = await charger.lookup(chosen[0], chosen[1], donation)
        if found.status is not ChargeStatus.NOT_FOUND:
            await _flag_if_undecided(pool, charger, await charger.apply(donation, chosen[0].name, found))
            return
        if not chosen[1].try_acquire():
            # Stay with this processor: a request it never answered may still land there, and only the same
            # processor deduplicates by our idempotency key.
            await reschedule(pool, donation.id, "pending")
            return
    else:
        acquired = charger.acquire_any()
        if acquired is None:
            await reschedule(pool, donation.id, previous_status)
            return
        chosen = acquired
        try:
            # Recorded before the call, so that recovery knows where to look the charge up.
            await pool.execute("UPDATE surge.donations SET processor = $2 WHERE id = $1", donation.id, chosen[0].name)
        except BaseException:
            charger.return_unused(chosen)
            raise
    result = await charger.charge(chosen[0], chosen[1], donation)
    await _flag_if_undecided(pool, charger, await charger.apply(donation, chosen[0].name, result))


async def _flag_if_undecided(pool: asyncpg.Pool, charger: Charger, donation: Donation) -> None:
    """A donation the processor still has not decided, past the review bound, is surfaced for finance."""
    if donation.status != "pending":
        return
    stuck = charger.limits.review.is_stuck(donation.attempts, donation.created_at, datetime.now(UTC))
    if stuck and await flag_for_review(pool, donation.id):
        charger.metrics.donations_flagged_for_review.inc()


async def reschedule(pool: asyncpg.Pool, donation_id: str, status: str) -> None:
    await pool.execute(
        # No processor call was made: the claim's attempt is given back, so that it does not lengthen the
        # backoff of the next real retry.
        """UPDATE surge.donations
              SET status = $2, attempts = attempts - 1, next_attempt_at = now() + interval '200 milliseconds'
            WHERE id = $1 AND status = 'charging'""",
        donation_id,
        status,
    )
