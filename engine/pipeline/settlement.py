"""Settlement: one group-committed transaction turns charge outcomes into books.

For each donation still open (queued, charging, pending) it records the final status, posts the ledger entries
(processor clearing ← campaign contributions; the fee when known, as its own entry in the fee's currency — see
engine/payments/fees.py) and turns the donor's hold into a posted contribution — or releases it. A donation already
settled (a webhook and a lookup racing, a replay after a crash) is left alone, and ledger references are the
donation id, so settling twice cannot post twice; only a fee it settled without, reported now, is booked (once).

The same statement writes the donor's receipt into the outbox for each donation it settles as succeeded
(engine/receipts/outbox.py): the receipt exists exactly when the donation is settled, and costs no round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from engine import chart_of_accounts
from engine.payments import fees
from engine.receipts.outbox import DONATION_RECEIPTS_FROM_SETTLED
from ledger.accounts import AccountDirectory
from ledger.entries import EntryRequest, transfer
from ledger.money import Money
from ledger.posting import LedgerInvariantError

FINAL_STATUSES = frozenset({"succeeded", "declined", "failed"})


@dataclass(frozen=True, slots=True)
class Settlement:
    donation_id: str
    status: str  # succeeded, declined or failed
    processor: str | None  # None: failed before any processor was asked (the queue's velocity re-check)
    processor_reference: str | None = None
    fee: Money | None = None  # in the currency the processor charged it, not necessarily the donation's
    decline_code: str | None = None
    failure_message: str | None = None
    card_brand: str | None = None  # the processor's, for the receipt
    card_last4: str | None = None

    def __post_init__(self) -> None:
        if self.status not in FINAL_STATUSES:
            raise ValueError(f"settlement status must be final, got {self.status}")


# The CTEs that turn the settled donations' holds on their donors' aggregates into posted contributions (succeeded)
# or release them (declined, failed), in the settlement's own statement. Rows are locked in the order intake locks
# them (ORDER BY … COLLATE "C", engine/pipeline/intake.py), stated rather than left to the join's plan: a settlement
# batch and an intake batch never wait on each other in opposite orders (a deadlock would fail both batches).
_RELEASE_HOLDS_OF_SETTLED = """
           holds AS (
               SELECT campaign, election, donor_key, -sum(amount_minor) AS held,
                      coalesce(sum(amount_minor) FILTER (WHERE status = 'succeeded'), 0) AS posted
                 FROM settled GROUP BY campaign, election, donor_key),
           locked AS (
               SELECT a.campaign, a.election, a.donor_key, h.held, h.posted
                 FROM surge.contribution_aggregates a
                 JOIN holds h ON (a.campaign, a.election, a.donor_key) = (h.campaign, h.election, h.donor_key)
                ORDER BY a.campaign COLLATE "C", a.election COLLATE "C", a.donor_key COLLATE "C"
                  FOR UPDATE OF a),
           released AS (
               UPDATE surge.contribution_aggregates a
                  SET held_minor = a.held_minor + l.held, posted_minor = a.posted_minor + l.posted,
                      updated_at = now()
                 FROM locked l
                WHERE (a.campaign, a.election, a.donor_key) = (l.campaign, l.election, l.donor_key))"""


async def commit_settlements(
    connection: asyncpg.Connection, directory: AccountDirectory, items: Sequence[Settlement]
) -> list[bool]:
    """Settle each open donation; per item True when this call settled it, False when it was already final.

    Inside a transaction under ``INDEX_LOOKUPS_ONLY`` (engine/database.py), sent with BEGIN by the pipeline's
    batcher and set by the other callers."""
    rows = await connection.fetch(
        f"""WITH settled AS (
               UPDATE surge.donations d
                  SET status = s.status, processor = s.processor, processor_reference = s.processor_reference,
                      -- A fee reported while the donation was pending (engine/payments/fees.py) is kept, not erased.
                      fee_minor = coalesce(s.fee_minor, d.fee_minor),
                      fee_currency = CASE WHEN s.fee_minor IS NULL THEN d.fee_currency ELSE s.fee_currency END,
                      decline_code = s.decline_code, failure_message = s.failure_message,
                      card_brand = coalesce(s.card_brand, d.card_brand),
                      card_last4 = coalesce(s.card_last4, d.card_last4),
                      settled_at = now(), updated_at = now()
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[],
                             $8::text[], $9::text[], $10::text[])
                      AS s(id, status, processor, processor_reference, fee_minor, fee_currency, decline_code,
                           failure_message, card_brand, card_last4)
                -- "Not final" rather than "IN (queued, charging, pending)": that list implies the predicate of the
                -- open donations' partial index, and a cached generic plan then read that whole index (its dead
                -- entries too: ~3,000 a call at 400/s) instead of probing the primary key once per id.
                WHERE d.id = s.id AND d.status NOT IN ('succeeded', 'declined', 'failed')
            RETURNING d.id, d.status, d.amount_minor, d.currency, d.campaign, d.election, d.donor_key, d.processor,
                      d.fee_minor, d.fee_currency, d.donor->>'email' AS email),
           receipts AS ({DONATION_RECEIPTS_FROM_SETTLED}),
           {_RELEASE_HOLDS_OF_SETTLED}
           SELECT id, status, amount_minor, currency, campaign, election, donor_key, processor, fee_minor,
                  fee_currency
             FROM settled""",
        [i.donation_id for i in items],
        [i.status for i in items],
        [i.processor for i in items],
        [i.processor_reference for i in items],
        [i.fee.amount_minor if i.fee else None for i in items],
        [i.fee.currency if i.fee else None for i in items],
        [i.decline_code for i in items],
        [i.failure_message for i in items],
        [i.card_brand for i in items],
        [i.card_last4 for i in items],
    )
    settled = {row["id"]: row for row in rows}
    if len(settled) < len(rows):
        raise LedgerInvariantError("one donation settled twice in a batch")
    # Already final, but settled without its fee (a lookup or event that knew it arrives late): record it now.
    late = [(i.donation_id, i.fee) for i in items if i.fee and i.status == "succeeded" and i.donation_id not in settled]
    claimed = await fees.claim_late_fees(connection, late)
    if rows or claimed:
        await _post(connection, directory, rows, claimed)
    return [item.donation_id in settled for item in items]


def donation_entries(row: asyncpg.Record) -> list[EntryRequest]:
    """The donation's own entry; its fee is a separate entry in the fee's currency (:func:`fees.donation_fee`)."""
    amount = Money(row["amount_minor"], row["currency"])
    processor, campaign = row["processor"], row["campaign"]
    return [
        transfer(
            row["id"],
            debit=chart_of_accounts.clearing(processor, amount.currency),
            credit=chart_of_accounts.contributions(campaign),
            money=amount,
            memo="donation",
            metadata={"donation": row["id"], "campaign": campaign},
        )
    ]


async def _post(
    connection: asyncpg.Connection,
    directory: AccountDirectory,
    rows: list[asyncpg.Record],
    claimed: list[asyncpg.Record],
) -> None:
    succeeded = [row for row in rows if row["status"] == "succeeded"]
    entries = [entry for row in succeeded for entry in donation_entries(row)]
    settled_fees = [fee for row in succeeded if (fee := fees.donation_fee(row)) is not None]
    await fees.post_with_fees(connection, directory, entries, [*settled_fees, *fees.booked_fees(claimed)])
