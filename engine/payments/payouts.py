"""Payouts: the processor paid money out to the campaign's bank, moving it from processor clearing to the bank.

A payout waits for nothing (clearing may run ahead of the charges' events), so it is applied at once; the same
payout under another event id is a duplicate, and a payout event without an amount can never apply.
"""

from __future__ import annotations

import logging

import asyncpg

from adapters.base import ProcessorEvent
from engine import chart_of_accounts
from engine.payments.parked_events import APPLIED, EventOutcome, duplicate, never
from ledger.accounts import AccountDirectory
from ledger.entries import EntryOutcome, transfer
from ledger.posting import LedgerInvariantError, post_entries

_logger = logging.getLogger(__name__)


async def payout_paid(
    connection: asyncpg.Connection, directory: AccountDirectory, processor: str, event: ProcessorEvent
) -> EventOutcome:
    if event.amount is None:
        _logger.error("%s payout event %s has no amount", processor, event.id)
        return never("payout event without an amount")
    payout = transfer(
        f"payout:{processor}:{event.object_id or event.id}",
        debit=chart_of_accounts.bank(processor, event.amount.currency),
        credit=chart_of_accounts.clearing(processor, event.amount.currency),
        money=event.amount,
        memo="payout",
    )
    [result] = await post_entries(connection, directory, [payout])
    if result.outcome is EntryOutcome.CREATED:
        return APPLIED
    if result.outcome is EntryOutcome.EXISTS:
        return duplicate(f"payout {payout.reference} already booked")
    raise LedgerInvariantError(f"posting {payout.reference} failed: {result.outcome}")
