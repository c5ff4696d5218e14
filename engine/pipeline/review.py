"""Donations the processor never decides: after a bounded number of processor calls or hours still ``pending``
(lookups keep answering pending or unknown), a donation is flagged for finance's review.

The flag (``surge.donations.needs_review_at``) does not change the donation's status: it stays ``pending``, keeps
its hold on the donor's limit and keeps being looked up at the longest backoff, so that a late answer from the
processor (a lookup, a webhook) still settles it exactly once. Finance sees the flagged ones in three places: the
``surge_donations_needing_review`` gauge (and the ``surge_donations_flagged_for_review`` counter) on ``/metrics``,
and ``GET /v1/donations?needs_review=true`` (finance key), which lists the flagged donations still unsettled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReviewLimits:
    lookups_max: int = 20  # processor calls (the charge and its lookups) that left the donation undecided
    age_max_hours: float = 24.0

    def __post_init__(self) -> None:
        if self.lookups_max < 1 or self.age_max_hours <= 0:
            raise ValueError("lookups_max must be at least 1 and age_max_hours above 0")

    def is_stuck(self, attempts: int, created_at: datetime, now: datetime) -> bool:
        """Has an undecided donation waited past the bound (``attempts`` processor calls, or its age)?"""
        return attempts >= self.lookups_max or now - created_at >= timedelta(hours=self.age_max_hours)


async def flag_for_review(connection: asyncpg.Connection | asyncpg.Pool, donation_id: str) -> bool:
    """Flag a still-pending donation; True when this call raised the flag (False: already flagged, or settled)."""
    flagged = await connection.fetchval(
        """UPDATE surge.donations SET needs_review_at = now()
            WHERE id = $1 AND status = 'pending' AND needs_review_at IS NULL
        RETURNING true""",
        donation_id,
    )
    if flagged:
        _logger.warning("donation %s: the processor has not decided it; flagged for finance's review", donation_id)
    return bool(flagged)
