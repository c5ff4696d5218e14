"""Worked accounting scenarios, each readable as a small story of a campaign's books."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from ledger import reads
from ledger.accounts import AccountDirectory, AccountType, ensure_account
from ledger.check import check_ledger
from ledger.entries import (
    EntryKind,
    EntryOutcome,
    EntryRequest,
    Leg,
    hold,
    post_hold,
    reverse,
    transfer,
    void_hold,
)
from ledger.money import Money
from ledger.posting import post_entries

USD = "USD"


@pytest.fixture
async def books(pool: asyncpg.Pool) -> AccountDirectory:
    async with pool.acquire() as connection:
        await ensure_account(connection, "clearing:sim", AccountType.ASSET, USD)
        await ensure_account(connection, "contributions:demo", AccountType.REVENUE, USD, campaign="demo")
        await ensure_account(connection, "fees:sim", AccountType.EXPENSE, USD)
        await ensure_account(connection, "clearing:eur", AccountType.ASSET, "EUR")
    return AccountDirectory()


async def post(pool: asyncpg.Pool, directory: AccountDirectory, *requests: EntryRequest) -> list[EntryOutcome]:
    async with pool.acquire() as connection, connection.transaction():
        results = await post_entries(connection, directory, list(requests))
    return [r.outcome for r in results]


async def balance(pool: asyncpg.Pool, account: str) -> tuple[int, int]:
    async with pool.acquire() as connection:
        b = await reads.balance(connection, account)
    return b.posted, b.pending


async def test_a_donation_with_a_fee(pool: asyncpg.Pool, books: AccountDirectory) -> None:
    # A $50.00 donation: the processor owes us $50 (clearing), the campaign earned $50; the processor keeps $1.75.
    donation = transfer("don_1", debit="clearing:sim", credit="contributions:demo", money=Money(5000, USD))
    fee = transfer("fee_1", debit="fees:sim", credit="clearing:sim", money=Money(175, USD))
    assert await post(pool, books, donation, fee) == [EntryOutcome.CREATED, EntryOutcome.CREATED]
    assert await balance(pool, "clearing:sim") == (4825, 0)
    assert await balance(pool, "contributions:demo") == (-5000, 0)
    assert await balance(pool, "fees:sim") == (175, 0)
    async with pool.acquire() as connection:
        totals = reads.trial_balance_totals(await reads.trial_balance(connection))
        assert totals == {USD: (5000, 5000), "EUR": (0, 0)}
        assert (await check_ledger(connection)).ok


async def test_replay_returns_the_original_and_a_different_replay_conflicts(
    pool: asyncpg.Pool, books: AccountDirectory
) -> None:
    first = transfer("don_2", debit="clearing:sim", credit="contributions:demo", money=Money(1000, USD))
    same = transfer("don_2", debit="clearing:sim", credit="contributions:demo", money=Money(1000, USD), memo="retry")
    different = transfer("don_2", debit="clearing:sim", credit="contributions:demo", money=Money(1001, USD))
    assert await post(pool, books, first) == [EntryOutcome.CREATED]
    assert await post(pool, books, same, different) == [
        EntryOutcome.EXISTS,
        EntryOutcome.EXISTS_WITH_DIFFERENT_CONTENT,
    ]
    assert await balance(pool, "clearing:sim") == (1000, 0)


async def test_one_bad_entry_does_not_fail_its_batch(pool: asyncpg.Pool, books: AccountDirectory) -> None:
    good = transfer("good", debit="clearing:sim", credit="contributions:demo", money=Money(300, USD))
    unbalanced = EntryRequest(
        "unbalanced", EntryKind.TRANSFER, (Leg("clearing:sim", 100, USD), Leg("contributions:demo", -99, USD))
    )
    unknown = transfer("unknown", debit="clearing:nowhere", credit="contributions:demo", money=Money(1, USD))
    wrong_currency = transfer("eur", debit="clearing:eur", credit="contributions:demo", money=Money(1, "EUR"))
    zero = transfer("zero", debit="clearing:sim", credit="contributions:demo", money=Money(0, USD))
    empty = EntryRequest("empty", EntryKind.TRANSFER)
    assert await post(pool, books, unbalanced, good, unknown, wrong_currency, zero, empty) == [
        EntryOutcome.UNBALANCED,
        EntryOutcome.CREATED,
        EntryOutcome.ACCOUNT_NOT_FOUND,
        EntryOutcome.CURRENCY_MISMATCH,
        EntryOutcome.ZERO_AMOUNT,
        EntryOutcome.NO_LEGS,
    ]
    assert await balance(pool, "clearing:sim") == (300, 0)


async def test_hold_then_partial_post(pool: asyncpg.Pool, books: AccountDirectory) -> None:
    # Authorise $100 (pending), capture $80: pending goes back to zero, $80 is posted.
    assert await post(
        pool, books, hold("h1", debit="clearing:sim", credit="contributions:demo", money=Money(10000, USD))
    ) == [EntryOutcome.CREATED]
    assert await balance(pool, "clearing:sim") == (0, 10000)
    assert await post(pool, books, post_hold("h1-post", "h1", amount_minor=8000)) == [EntryOutcome.CREATED]
    assert await balance(pool, "clearing:sim") == (8000, 0)
    assert await balance(pool, "contributions:demo") == (-8000, 0)
    assert await post(pool, books, void_hold("h1-void", "h1")) == [EntryOutcome.HOLD_ALREADY_RESOLVED]
    assert await post(pool, books, post_hold("h1-post", "h1", amount_minor=8000)) == [EntryOutcome.EXISTS]


async def test_hold_void_and_post_limits(pool: asyncpg.Pool, books: AccountDirectory) -> None:
    h = hold("h2", debit="clearing:sim", credit="contributions:demo", money=Money(500, USD))
    too_much = post_hold("h2-post", "h2", amount_minor=501)
    void = void_hold("h2-void", "h2")
    # The hold and its resolution may share a batch.
    assert await post(pool, books, h, too_much, void) == [
        EntryOutcome.CREATED,
        EntryOutcome.POST_AMOUNT_INVALID,
        EntryOutcome.CREATED,
    ]
    assert await balance(pool, "clearing:sim") == (0, 0)
    assert await post(pool, books, post_hold("x", "missing"), void_hold("y", "don_nope")) == [
        EntryOutcome.PARENT_NOT_FOUND,
        EntryOutcome.PARENT_NOT_FOUND,
    ]


async def test_reversal_negates_once(pool: asyncpg.Pool, books: AccountDirectory) -> None:
    t = transfer("don_3", debit="clearing:sim", credit="contributions:demo", money=Money(2500, USD))
    assert await post(pool, books, t, reverse("don_3-rev", "don_3")) == [EntryOutcome.CREATED, EntryOutcome.CREATED]
    assert await balance(pool, "clearing:sim") == (0, 0)
    assert await post(pool, books, reverse("don_3-rev2", "don_3")) == [EntryOutcome.ALREADY_REVERSED]
    assert await post(pool, books, reverse("rev-of-rev", "don_3-rev")) == [EntryOutcome.NOT_REVERSIBLE]
    h = hold("h3", debit="clearing:sim", credit="contributions:demo", money=Money(1, USD))
    assert await post(pool, books, h, post_hold("h3-p", "h3"), reverse("h3-p-rev", "h3-p"), reverse("h3r", "h3")) == [
        EntryOutcome.CREATED,
        EntryOutcome.CREATED,
        EntryOutcome.CREATED,
        EntryOutcome.NOT_REVERSIBLE,
    ]
    assert await balance(pool, "clearing:sim") == (0, 0)


async def test_balance_as_of_and_paging(pool: asyncpg.Pool, books: AccountDirectory) -> None:
    start = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
    requests = [
        transfer(
            f"don_t{i}",
            debit="clearing:sim",
            credit="contributions:demo",
            money=Money(100, USD),
            effective_at=start + timedelta(hours=i),
        )
        for i in range(5)
    ]
    await post(pool, books, *requests)
    async with pool.acquire() as connection:
        assert (await reads.balance_as_of(connection, "clearing:sim", start + timedelta(hours=2))).posted == 300
        assert (await reads.balance_as_of(connection, "clearing:sim", start - timedelta(hours=1))).posted == 0
        # The trial balance as of a time reads the same postings; as of the end it agrees with the cached balances.
        then = await reads.trial_balance(connection, start + timedelta(hours=2))
        assert {(x.account, x.debit, x.credit) for x in then if x.debit or x.credit} == {
            ("clearing:sim", 300, 0),
            ("contributions:demo", 0, 300),
        }
        now = {x for x in await reads.trial_balance(connection) if x.debit or x.credit}
        assert {
            x for x in await reads.trial_balance(connection, start + timedelta(days=1)) if x.debit or x.credit
        } == now
        first = await reads.account_entries(connection, "clearing:sim", limit=3)
        second = await reads.account_entries(connection, "clearing:sim", limit=3, before_entry_id=first[-1].entry_id)
    assert [e.reference for e in first + second] == [f"don_t{i}" for i in reversed(range(5))]


async def test_the_database_refuses_what_code_must_never_do(pool: asyncpg.Pool, books: AccountDirectory) -> None:
    await post(pool, books, transfer("don_4", debit="clearing:sim", credit="contributions:demo", money=Money(7, USD)))
    async with pool.acquire() as connection:
        for statement in (
            "UPDATE ledger.postings SET amount = amount * 2",
            "DELETE FROM ledger.postings",
            "UPDATE ledger.entries SET memo = 'edited'",
            "DELETE FROM ledger.entries",
            "TRUNCATE ledger.postings",
        ):
            with pytest.raises(asyncpg.PostgresError) as refused:
                await connection.execute(statement)
            assert refused.value.sqlstate == "SG002"
        entry_id = await connection.fetchval("SELECT id FROM ledger.entries WHERE reference = 'don_4'")
        account_id = await connection.fetchval("SELECT id FROM ledger.accounts WHERE code = 'clearing:sim'")
        with pytest.raises(asyncpg.PostgresError) as unbalanced:
            await connection.execute(
                "INSERT INTO ledger.postings (entry_id, account_id, amount, currency) VALUES ($1, $2, 5, 'USD')",
                entry_id,
                account_id,
            )
        assert unbalanced.value.sqlstate == "SG001"
        # An entry is reversed (a hold resolved) once: two children of one parent are refused, whatever the code.
        with pytest.raises(asyncpg.UniqueViolationError):
            await connection.execute(
                """INSERT INTO ledger.entries (reference, kind, parent_entry_id, effective_at, fingerprint)
                   VALUES ('don_4-rev-a', 'reversal', $1, now(), '\\x00'),
                          ('don_4-rev-b', 'reversal', $1, now(), '\\x00')""",
                entry_id,
            )
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await connection.execute(
                """INSERT INTO ledger.postings (entry_id, account_id, amount, currency)
                   VALUES ($1, $2, 5, 'EUR'), ($1, $2, -5, 'EUR')""",
                entry_id,
                account_id,
            )


async def test_check_names_a_drifted_balance(pool: asyncpg.Pool, books: AccountDirectory) -> None:
    await post(pool, books, transfer("don_5", debit="clearing:sim", credit="contributions:demo", money=Money(9, USD)))
    async with pool.acquire() as connection:
        assert (await check_ledger(connection)).ok
        await connection.execute(
            "UPDATE ledger.balances SET posted = posted + 1 WHERE account_id = "
            "(SELECT id FROM ledger.accounts WHERE code = 'clearing:sim')"
        )
        report = await check_ledger(connection)
    assert not report.ok
    assert any("clearing:sim" in problem for problem in report.problems)
