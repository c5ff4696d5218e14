"""A donor's contribution aggregate per campaign and election: what counts toward the contribution limit.

Holds and posting are batched with the donation (intake and settlement); this module takes a contribution back out
when it no longer counts — a refund, or a dispute the campaign lost — one way for every path.
"""

from __future__ import annotations

import logging

import asyncpg

_logger = logging.getLogger(__name__)


async def remove_contribution(
    connection: asyncpg.Connection, campaign: str, election: str, donor_key: str, amount_minor: int
) -> None:
    """Take ``amount_minor`` out of the donor's posted aggregate, never below zero.

    Going below zero would mean the same money left twice (or never came in): a bug elsewhere, so it is logged as a
    warning and the aggregate stops at zero rather than failing the refund or dispute that found it."""
    if amount_minor < 0:
        raise ValueError(f"a contribution is removed by a positive amount, not {amount_minor}")
    # The subquery locks the row first, so ``before`` is the value this update starts from.
    before = await connection.fetchval(
        """UPDATE surge.contribution_aggregates a
              SET posted_minor = greatest(a.posted_minor - $4, 0), updated_at = now()
             FROM (SELECT campaign, election, donor_key, posted_minor FROM surge.contribution_aggregates
                    WHERE (campaign, election, donor_key) = ($1, $2, $3) FOR UPDATE) old
            WHERE (a.campaign, a.election, a.donor_key) = (old.campaign, old.election, old.donor_key)
        RETURNING old.posted_minor""",
        campaign,
        election,
        donor_key,
        amount_minor,
    )
    if before is not None and before < amount_minor:
        _logger.warning(
            "the contribution aggregate of donor %s (%s, %s) would go below zero: %d posted, %d removed; kept at 0",
            donor_key,
            campaign,
            election,
            before,
            amount_minor,
        )


async def restore_contribution(
    connection: asyncpg.Connection, campaign: str, election: str, donor_key: str, amount_minor: int
) -> int:
    """Put ``amount_minor`` back into the donor's posted aggregate (a refund the processor returned: the campaign
    holds the money again); return what did not fit under the limit.

    The donor may have given again since the refund, so the whole amount may not fit: the aggregate's CHECK keeps
    it at the limit, and the excess is returned (and logged) for finance, who must refund it again."""
    if amount_minor < 0:
        raise ValueError(f"a contribution is restored by a positive amount, not {amount_minor}")
    row = await connection.fetchrow(
        """UPDATE surge.contribution_aggregates a
              SET posted_minor = a.posted_minor + least($4, a.limit_minor - a.posted_minor - a.held_minor),
                  updated_at = now()
             FROM (SELECT campaign, election, donor_key, limit_minor - posted_minor - held_minor AS room
                     FROM surge.contribution_aggregates
                    WHERE (campaign, election, donor_key) = ($1, $2, $3) FOR UPDATE) old
            WHERE (a.campaign, a.election, a.donor_key) = (old.campaign, old.election, old.donor_key)
        RETURNING old.room""",
        campaign,
        election,
        donor_key,
        amount_minor,
    )
    excess = amount_minor - min(amount_minor, row["room"]) if row is not None else amount_minor
    if excess:
        _logger.warning(
            "donor %s (%s, %s): %d of a returned refund does not fit under the contribution limit; refund it again",
            donor_key,
            campaign,
            election,
            excess,
        )
    return excess
