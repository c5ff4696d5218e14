"""What finance must look at that no reconciliation run shows yet: donations the processor never decided (flagged by
engine/pipeline/review.py) and processor events still parked (engine/payments/parked_events.py), with those parked
past the sweeper's bound counted apart."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True, slots=True)
class Attention:
    donations_needing_review: int
    events_parked: int
    events_parked_overdue: int

    @property
    def total(self) -> int:
        return self.donations_needing_review + self.events_parked_overdue


async def attention(connection: asyncpg.Connection) -> Attention:
    row = await connection.fetchrow(
        """SELECT (SELECT count(*) FROM surge.donations
                    WHERE needs_review_at IS NOT NULL
                      AND status IN ('queued', 'charging', 'pending')) AS needing_review,
                  count(*) AS parked,
                  count(*) FILTER (WHERE overdue_reported_at IS NOT NULL) AS overdue
             FROM surge.parked_events WHERE resolved_at IS NULL"""
    )
    return Attention(row["needing_review"], row["parked"], row["overdue"])
