"""Payouts: the processor paid money out to the campaign's bank, moving it from processor clearing to the bank."""

from __future__ import annotations

import asyncpg

from adapters.base import ProcessorEvent
from engine import chart_of_accounts
from ledger.accounts import AccountDirectory
from ledger.entries import transfer
from ledger.posting import LedgerInvariantError, post_entries_or_raise


async def payout_paid(
    connection: asyncpg.Connection, directory: AccountDirectory, processor: str, event: ProcessorEvent
) -> None:
    if event.amount is None:
        raise LedgerInvariantError(f"payout event {event.id} has no amount")
    payout = transfer(
        f"payout:{processor}:{event.object_id or event.id}",
        debit=chart_of_accounts.bank(processor, event.amount.currency),
        credit=chart_of_accounts.clearing(processor, event.amount.currency),
        money=event.amount,
        memo="payout",
    )
    await post_entries_or_raise(connection, directory, [payout])
