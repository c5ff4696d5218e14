"""The receipts outbox (``surge.receipts``): rows written with the money's own transaction, claimed and finished by
the relay (engine/receipts/relay.py).

A receipt's id is derived from what it acknowledges (``rcpt_<donation id>``, ``rcpt_<refund id>``) and
``(donation, kind, refund)`` is unique, so a settlement or a refund booked twice (a replay, a webhook racing a
lookup) writes one receipt. Claiming follows the durable queue: due rows are taken with ``FOR UPDATE SKIP LOCKED``
(engine processes share the work, none sends a row another is sending) and leased by moving ``next_attempt_at``
past the send's timeout; a relay killed mid-send leaves the row pending, and the next claim sends it again with the
``message_id`` fixed at the first claim, so the donor's mail program can tell it is the same message.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

RECEIPT_ID_PREFIX = "rcpt_"

# The INSERT of a settlement's data-modifying CTE (engine/pipeline/settlement.py): ``settled`` holds the donations
# the statement settled, with the donor's ``email``. Succeeded ones get their receipt in the same statement.
DONATION_RECEIPTS_FROM_SETTLED = f"""
    INSERT INTO surge.receipts (id, donation_id, kind, recipient)
    SELECT '{RECEIPT_ID_PREFIX}' || id, id, 'donation', email FROM settled
     WHERE status = 'succeeded' AND email IS NOT NULL
    ON CONFLICT DO NOTHING"""


async def add_refund_receipt(connection: asyncpg.Connection, refund_id: str, donation_id: str) -> None:
    """The receipt for a refund just booked (inside the booking's transaction)."""
    await connection.execute(
        f"""INSERT INTO surge.receipts (id, donation_id, kind, refund_id, recipient)
            SELECT '{RECEIPT_ID_PREFIX}' || $1, d.id, 'refund', $1, d.donor->>'email'
              FROM surge.donations d
             WHERE d.id = $2 AND d.donor->>'email' IS NOT NULL
            ON CONFLICT DO NOTHING""",
        refund_id,
        donation_id,
    )


@dataclass(frozen=True, slots=True)
class ClaimedReceipt:
    """A receipt claimed for sending, with everything its message says."""

    id: str
    kind: str  # donation or refund
    recipient: str
    message_id: str
    attempts: int  # including this one
    created_at: datetime
    donation_id: str
    refund_id: str | None
    amount_minor: int  # the donation's amount, or the refund's
    currency: str
    occurred_at: datetime  # when the donation settled, or the refund
    donor_first_name: str
    donor_last_name: str
    card_brand: str | None
    card_last4: str | None
    campaign_slug: str
    campaign_name: str
    campaign_type: str  # political or nonprofit
    legal_text: str | None  # the campaign's override
    text_template: str | None  # the campaign's overrides
    html_template: str | None
    plan_id: str | None  # a recurring plan's installment: its receipt carries the plan's manage link

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> ClaimedReceipt:
        return cls(**{name: row[name] for name in cls.__slots__})


async def claim_due(pool: asyncpg.Pool, batch_max: int, lease_s: float, message_id_domain: str) -> list[ClaimedReceipt]:
    """Claim up to ``batch_max`` due receipts, leased for ``lease_s`` seconds, oldest due first."""
    rows = await pool.fetch(
        """WITH due AS (
               SELECT id FROM surge.receipts
                WHERE status = 'pending' AND next_attempt_at <= now()
                ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED),
           claimed AS (
               UPDATE surge.receipts r
                  SET attempts = r.attempts + 1, next_attempt_at = now() + make_interval(secs => $2),
                      message_id = coalesce(r.message_id, '<' || r.id || '@' || $3 || '>')
                 FROM due WHERE r.id = due.id
               RETURNING r.*)
           SELECT r.id, r.kind, r.recipient, r.message_id, r.attempts, r.created_at, r.donation_id, r.refund_id,
                  coalesce(f.amount_minor, d.amount_minor) AS amount_minor, d.currency,
                  CASE WHEN r.kind = 'refund' THEN coalesce(f.settled_at, f.updated_at)
                       ELSE coalesce(d.settled_at, d.updated_at) END AS occurred_at,
                  coalesce(d.donor->>'first_name', '') AS donor_first_name,
                  coalesce(d.donor->>'last_name', '') AS donor_last_name,
                  d.card_brand, d.card_last4, c.slug AS campaign_slug, c.name AS campaign_name,
                  coalesce(c.page_settings ->> 'kind', 'political') AS campaign_type,
                  c.receipt_legal_text AS legal_text, c.receipt_text_template AS text_template,
                  c.receipt_html_template AS html_template, i.plan_id
             FROM claimed r
             JOIN surge.donations d ON d.id = r.donation_id
             JOIN surge.campaigns c ON c.slug = d.campaign
             LEFT JOIN surge.refunds f ON f.id = r.refund_id
             LEFT JOIN surge.recurring_installments i ON i.donation_id = r.donation_id AND r.kind = 'donation'
            ORDER BY r.created_at, r.id""",
        batch_max,
        lease_s,
        message_id_domain,
    )
    return [ClaimedReceipt.from_row(row) for row in rows]


async def mark_sent(pool: asyncpg.Pool, receipt_ids: list[str]) -> None:
    await pool.execute(
        """UPDATE surge.receipts SET status = 'sent', sent_at = now(), last_error = NULL
            WHERE id = ANY($1::text[]) AND status = 'pending'""",
        receipt_ids,
    )


async def mark_retry(pool: asyncpg.Pool, receipt_id: str, error: str, delay_s: float) -> None:
    await pool.execute(
        """UPDATE surge.receipts SET last_error = $2, next_attempt_at = now() + make_interval(secs => $3)
            WHERE id = $1 AND status = 'pending'""",
        receipt_id,
        error,
        delay_s,
    )


async def mark_failed(pool: asyncpg.Pool, receipt_id: str, error: str) -> None:
    await pool.execute(
        "UPDATE surge.receipts SET status = 'failed', last_error = $2 WHERE id = $1 AND status = 'pending'",
        receipt_id,
        error,
    )


@dataclass(frozen=True, slots=True)
class OutboxBacklog:
    pending: int
    oldest_pending_age_s: float  # how far behind the relay runs: the oldest receipt not sent yet, 0 when none


async def backlog(pool: asyncpg.Pool) -> OutboxBacklog:
    row = await pool.fetchrow(
        """SELECT count(*) AS pending,
                  coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age_s
             FROM surge.receipts WHERE status = 'pending'"""
    )
    return OutboxBacklog(row["pending"], row["oldest_age_s"])
