"""reads.entry_postings: one entry's postings by its reference, as the payments code reads a dispute's withdrawal."""

from __future__ import annotations

import asyncpg

from ledger import reads
from ledger.accounts import AccountDirectory, AccountType, ensure_account
from ledger.entries import transfer
from ledger.money import Money
from ledger.posting import post_entries_or_raise


async def test_an_entry_s_postings_by_reference(pool: asyncpg.Pool) -> None:
    directory = AccountDirectory()
    async with pool.acquire() as connection:
        await ensure_account(connection, "clearing:sim:USD", AccountType.ASSET, "USD")
        await ensure_account(connection, "disputes:demo", AccountType.REVENUE, "USD", campaign="demo")
        withdrawal = transfer(
            "dispute:dp_1", debit="disputes:demo", credit="clearing:sim:USD", money=Money(2_500, "USD")
        )
        async with connection.transaction():
            await post_entries_or_raise(connection, directory, [withdrawal])
        postings = await reads.entry_postings(connection, "dispute:dp_1")
        assert postings == [
            reads.EntryPosting("disputes:demo", "USD", 2_500, False),
            reads.EntryPosting("clearing:sim:USD", "USD", -2_500, False),
        ]
        assert await reads.entry_postings(connection, "dispute:unknown") == []
