"""The database's own guard on what postings reference (a set-based check per statement, migration 0005), and the
COPY path of posting: entries with and without metadata in one batch."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from ledger.accounts import AccountDirectory, AccountType, ensure_account
from ledger.entries import EntryOutcome, transfer
from ledger.money import Money
from ledger.posting import post_entries

USD = "USD"


@pytest.fixture
async def accounts(pool: asyncpg.Pool) -> dict[str, int]:
    async with pool.acquire() as connection:
        clearing = await ensure_account(connection, "clearing:sim", AccountType.ASSET, USD)
        contributions = await ensure_account(connection, "contributions:demo", AccountType.REVENUE, USD, "demo")
    return {"clearing": clearing.id, "contributions": contributions.id}


async def test_a_posting_on_a_missing_entry_is_refused(pool: asyncpg.Pool, accounts: dict[str, int]) -> None:
    async with pool.acquire() as connection:
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await connection.execute(
                """INSERT INTO ledger.postings (entry_id, account_id, amount, currency)
                   VALUES (424242, $1, 5, 'USD'), (424242, $2, -5, 'USD')""",
                accounts["clearing"],
                accounts["contributions"],
            )


async def test_a_posting_on_a_missing_account_is_refused(pool: asyncpg.Pool, accounts: dict[str, int]) -> None:
    directory = AccountDirectory()
    async with pool.acquire() as connection, connection.transaction():
        [result] = await post_entries(
            connection,
            directory,
            [transfer("don_1", debit="clearing:sim", credit="contributions:demo", money=Money(5, USD))],
        )
    assert result.outcome is EntryOutcome.CREATED
    async with pool.acquire() as connection:
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await connection.execute(
                """INSERT INTO ledger.postings (entry_id, account_id, amount, currency)
                   VALUES ($1, $2, 5, 'USD'), ($1, 999999, -5, 'USD')""",
                result.entry_id,
                accounts["clearing"],
            )


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM ledger.accounts WHERE code = 'contributions:demo'",
        "UPDATE ledger.accounts SET currency = 'EUR' WHERE code = 'contributions:demo'",
        "UPDATE ledger.accounts SET code = 'renamed' WHERE code = 'contributions:demo'",
        "TRUNCATE ledger.accounts CASCADE",
    ],
)
async def test_accounts_are_permanent(pool: asyncpg.Pool, accounts: dict[str, int], statement: str) -> None:
    async with pool.acquire() as connection:
        with pytest.raises(asyncpg.PostgresError) as refused:
            await connection.execute(statement)
    assert refused.value.sqlstate == "SG002"


async def test_an_account_keeps_an_editable_campaign(pool: asyncpg.Pool, accounts: dict[str, int]) -> None:
    """The campaign is a label, not part of the account's identity: the guard that keeps accounts permanent lets it
    change, and the change leaves the account's id, code, type and currency as they were."""
    columns = "id, code, type, currency, campaign"
    async with pool.acquire() as connection:
        before = await connection.fetchrow(f"SELECT {columns} FROM ledger.accounts WHERE code = 'contributions:demo'")
        status = await connection.execute(
            "UPDATE ledger.accounts SET campaign = 'renamed' WHERE code = 'contributions:demo'"
        )
        after = await connection.fetchrow(f"SELECT {columns} FROM ledger.accounts WHERE code = 'contributions:demo'")
    assert status == "UPDATE 1"
    assert before is not None and after is not None
    assert before["campaign"] == "demo" and after["campaign"] == "renamed"
    assert {**dict(after), "campaign": "demo"} == dict(before)
    assert after["id"] == accounts["contributions"]


async def test_a_batch_mixing_metadata_and_none_keeps_every_field(pool: asyncpg.Pool, accounts: dict[str, int]) -> None:
    effective = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    requests = [
        transfer("plain", debit="clearing:sim", credit="contributions:demo", money=Money(100, USD)),
        transfer(
            "rich",
            debit="clearing:sim",
            credit="contributions:demo",
            money=Money(200, USD),
            memo="donation",
            metadata={"donation": "don_9", "campaign": "demo"},
        ),
        transfer(
            "dated", debit="clearing:sim", credit="contributions:demo", money=Money(300, USD), effective_at=effective
        ),
    ]
    async with pool.acquire() as connection:
        async with connection.transaction():
            results = await post_entries(connection, AccountDirectory(), requests)
            now = await connection.fetchval("SELECT now()")
        rows = {
            row["reference"]: row
            for row in await connection.fetch(
                "SELECT reference, kind, memo, metadata, effective_at, fingerprint FROM ledger.entries"
            )
        }
        postings = await connection.fetch(
            """SELECT e.reference, p.account_id, p.amount, p.currency, p.pending
                 FROM ledger.postings p JOIN ledger.entries e ON e.id = p.entry_id ORDER BY e.reference, p.amount"""
        )
    assert [r.outcome for r in results] == [EntryOutcome.CREATED] * 3
    assert rows["plain"]["metadata"] == {} and rows["plain"]["memo"] is None
    assert rows["rich"]["metadata"] == {"donation": "don_9", "campaign": "demo"} and rows["rich"]["memo"] == "donation"
    assert rows["plain"]["effective_at"] == now and rows["rich"]["effective_at"] == now
    assert rows["dated"]["effective_at"] == effective
    assert all(rows[r.reference]["fingerprint"] == r.fingerprint() for r in requests)
    assert [(p["reference"], p["amount"], p["currency"].strip(), p["pending"]) for p in postings] == [
        ("dated", -300, USD, False),
        ("dated", 300, USD, False),
        ("plain", -100, USD, False),
        ("plain", 100, USD, False),
        ("rich", -200, USD, False),
        ("rich", 200, USD, False),
    ]
