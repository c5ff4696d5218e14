"""What finance must look at that no reconciliation run shows yet: donations and refunds the processor never decided
(flagged by engine/pipeline/review.py and engine/payments/refund_recovery.py), refunds the processor returned after
they had succeeded (engine/payments/refund_returns.py: the donor was not repaid) and processor events still parked
(engine/payments/parked_events.py), with those parked past the sweeper's bound counted apart."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True, slots=True)
class Attention:
    donations_needing_review: int
    events_parked: int
    events_parked_overdue: int
    refunds_needing_review: int = 0
    refunds_returned: int = 0

    @property
    def total(self) -> int:
        return (
            self.donations_needing_review
            + self.events_parked_overdue
            + self.refunds_needing_review
            + self.refunds_returned
        )


async def attention(connection: asyncpg.Connection) -> Attention:
    row = await connection.fetchrow(
        """SELECT (SELECT count(*) FROM surge.donations
                    WHERE needs_review_at IS NOT NULL
                      AND status IN ('queued', 'charging', 'pending')) AS needing_review,
                  (SELECT count(*) FROM surge.refunds
                    WHERE needs_review_at IS NOT NULL
                      AND status IN ('refunding', 'pending')) AS refunds_needing_review,
                  (SELECT count(*) FROM surge.refunds WHERE returned_at IS NOT NULL) AS refunds_returned,
                  count(*) AS parked,
                  count(*) FILTER (WHERE overdue_reported_at IS NOT NULL) AS overdue
             FROM surge.parked_events WHERE resolved_at IS NULL"""
    )
    return Attention(
        row["needing_review"], row["parked"], row["overdue"], row["refunds_needing_review"], row["refunds_returned"]
    )
