"""A refund that fails after it succeeded: the processor could not return the money to the card (closed account,
expired card) and put it back in the balance — Stripe moves a refund from ``succeeded`` to ``failed`` and says so in
a ``refund.failed`` event.

The books follow the money, with a new entry (postings are never changed): the refund's entry is reversed (debit
processor clearing, credit the campaign's refunds), the refund becomes ``failed`` with ``returned_at`` set, the
donation's refunded amount goes back down so finance can refund it again (by another card, through Surge, or by
cheque), and the contribution counts toward the donor's limit again — what does not fit under the limit is logged
for finance. Returned refunds are counted on the dashboard (engine/finance/attention.py) until finance acts.
"""

from __future__ import annotations

import logging

import asyncpg

from engine import chart_of_accounts
from engine.pipeline.aggregates import restore_contribution
from ledger.accounts import AccountDirectory
from ledger.entries import transfer
from ledger.money import Money
from ledger.posting import post_entries_or_raise

_logger = logging.getLogger(__name__)


async def return_refund(
    connection: asyncpg.Connection, directory: AccountDirectory, refund_id: str, message: str | None
) -> bool:
    """Reverse a succeeded refund the processor reports failed (inside the caller's transaction); True when this
    call reversed it, False when it was not a succeeded refund (already returned, never booked)."""
    refund = await connection.fetchrow(
        """UPDATE surge.refunds SET status = 'failed', returned_at = now(), updated_at = now(),
                  failure_message = coalesce($2, 'the refund failed after it succeeded')
            WHERE id = $1 AND status = 'succeeded'
        RETURNING id, donation_id, amount_minor, currency, processor_reference""",
        refund_id,
        message,
    )
    if refund is None:
        return False
    donation = await connection.fetchrow(
        """UPDATE surge.donations SET refunded_minor = refunded_minor - $2, updated_at = now()
            WHERE id = $1 RETURNING campaign, election, donor_key, processor""",
        refund["donation_id"],
        refund["amount_minor"],
    )
    await restore_contribution(
        connection, donation["campaign"], donation["election"], donation["donor_key"], refund["amount_minor"]
    )
    entry = transfer(
        f"{refund['id']}:returned",
        debit=chart_of_accounts.clearing(donation["processor"], refund["currency"]),
        credit=chart_of_accounts.refunds(donation["campaign"]),
        money=Money(refund["amount_minor"], refund["currency"]),
        memo="refund returned by the processor",
        metadata={"donation": refund["donation_id"], "refund": refund["id"]},
    )
    await post_entries_or_raise(connection, directory, [entry])
    _logger.error(
        "refund %s (%s) of donation %s failed after it succeeded: reversed; the donor has not been repaid",
        refund["id"],
        refund["processor_reference"],
        refund["donation_id"],
    )
    return True
