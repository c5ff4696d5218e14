"""Late fees and fee accounts opened on demand, on the engine's own database with the simulated processor's record.

A donation is made through the served API with a card that waits for authentication, so nothing but the test
settles it: first without its fee (as a lookup or event that did not know it would), then the processor's balance
transactions (the simulated processor's record, the same data reconciliation reads) bring the fee.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.simulated import SimulatedProcessor
from engine.payments.fees import LateFeeOutcome, book_fees_from_balance_transactions, record_late_fee
from engine.pipeline.settlement import Settlement, commit_settlements
from ledger import reads
from ledger.accounts import AccountDirectory
from ledger.check import check_ledger
from ledger.money import Money
from tests.commands import run_cli
from tests.e2e.conftest import Surge, donation, start_surge, surge_settings
from tests.waiting import wait_until

FAR_PAST = datetime(2000, 1, 1, tzinfo=UTC)
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)


@pytest.fixture
async def surge(database_url: str, tmp_path: Path) -> AsyncIterator[Surge]:
    server, client, pool, keys = await start_surge(database_url, surge_settings(database_url, tmp_path))
    try:
        yield Surge(client, pool, keys, server.app)
    finally:
        await client.close()
        await pool.close()


async def pending_donation(surge: Surge, amount: int = 5000) -> tuple[str, str]:
    status, gift = await surge.donate(donation(amount, "pm_card_threeDSecureRequired"))
    assert status == 202, gift
    reference = await wait_until(
        lambda: surge.pool.fetchval(
            "SELECT processor_reference FROM surge.donations WHERE id = $1 AND status = 'pending'", gift["id"]
        ),
        what="the donation waiting for authentication",
    )
    return gift["id"], reference


async def posted(surge: Surge, account: str) -> int:
    async with surge.pool.acquire() as connection:
        try:
            return (await reads.balance(connection, account)).posted
        except reads.AccountNotFoundError:
            return 0


async def settle(surge: Surge, directory: AccountDirectory, settlement: Settlement) -> list[bool]:
    async with surge.pool.acquire() as connection, connection.transaction():
        return await commit_settlements(connection, directory, [settlement])


async def test_the_balance_transaction_sweep_books_a_late_fee_once(surge: Surge) -> None:
    donation_id, reference = await pending_donation(surge, 5000)
    directory = AccountDirectory()
    # Settled by news that did not carry the fee: unknown (NULL), not zero.
    assert await settle(surge, directory, Settlement(donation_id, "succeeded", "simulated", reference)) == [True]
    assert await posted(surge, "fees:simulated:USD") == 0
    async with SimulatedProcessor(surge.pool) as simulated:
        await simulated.resolve_pending(reference, succeeded=True)  # its balance transaction carries the fee
        # Sweeps racing each other, then a repeat: the fee is booked by exactly one of them.
        sweeps = await asyncio.gather(
            *(book_fees_from_balance_transactions(surge.pool, directory, simulated, FAR_PAST, FAR_FUTURE) for _ in "ab")
        )
        again = await book_fees_from_balance_transactions(surge.pool, directory, simulated, FAR_PAST, FAR_FUTURE)

    assert sorted(sweep.booked for sweep in sweeps) == [0, 1] and again.booked == 0
    fee = 5000 * 220 // 10_000 + 30
    assert await posted(surge, "fees:simulated:USD") == fee
    assert await posted(surge, "clearing:simulated:USD") == 5000 - fee
    row = await surge.pool.fetchrow("SELECT fee_minor, fee_currency FROM surge.donations WHERE id = $1", donation_id)
    assert tuple(row) == (fee, "USD")
    # A fee reported by an event after the sweep booked it changes nothing.
    async with surge.pool.acquire() as connection, connection.transaction():
        outcome = await record_late_fee(connection, directory, donation_id, Money(fee, "USD"))
    assert outcome is LateFeeOutcome.ALREADY_KNOWN
    assert await posted(surge, "fees:simulated:USD") == fee
    async with surge.pool.acquire() as connection:
        assert (await check_ledger(connection)).ok


async def test_no_fee_is_booked_for_a_declined_donation(surge: Surge) -> None:
    donation_id, reference = await pending_donation(surge, 5000)
    directory = AccountDirectory()
    assert await settle(surge, directory, Settlement(donation_id, "declined", "simulated", reference)) == [True]
    async with surge.pool.acquire() as connection, connection.transaction():
        outcome = await record_late_fee(connection, directory, donation_id, Money(140, "USD"))
    assert outcome is LateFeeOutcome.NOT_CHARGED
    assert await posted(surge, "fees:simulated:USD") == 0


async def test_accounts_opened_in_a_rolled_back_batch_are_not_remembered(surge: Surge) -> None:
    donation_id, reference = await pending_donation(surge, 5000)
    directory = AccountDirectory()  # one directory for the process, as the settle batcher keeps it
    settlement = Settlement(donation_id, "succeeded", "simulated", reference, fee=Money(300, "JPY"))
    with pytest.raises(RuntimeError):
        async with surge.pool.acquire() as connection, connection.transaction():
            assert await commit_settlements(connection, directory, [settlement]) == [True]
            raise RuntimeError("the batch fails after posting: the JPY accounts it opened are rolled back")
    # The retried batch opens them again and posts to the accounts that now exist, not to remembered ids.
    assert await settle(surge, directory, settlement) == [True]

    assert await posted(surge, "fees:simulated:JPY") == 300
    assert await posted(surge, "clearing:simulated:JPY") == -300
    assert await posted(surge, "clearing:simulated:USD") == 5000
    async with surge.pool.acquire() as connection:
        assert (await check_ledger(connection)).ok


async def test_surge_fees_sweep_books_a_late_fee_from_the_command_line(
    surge: Surge, database_url: str, tmp_path: Path
) -> None:
    donation_id, reference = await pending_donation(surge, 5000)
    assert await settle(surge, AccountDirectory(), Settlement(donation_id, "succeeded", "simulated", reference)) == [
        True
    ]
    async with SimulatedProcessor(surge.pool) as simulated:
        await simulated.resolve_pending(reference, succeeded=True)
    sweep = ("fees", "sweep", "--processor", "simulated", "--from", "2000-01-01", "--to", "2100-01-01")

    first = await run_cli(database_url, tmp_path, *sweep)
    again = await run_cli(database_url, tmp_path, *sweep)

    assert first.returncode == 0, first.stderr
    assert "1 late fees booked" in first.stdout and "0 late fees booked" in again.stdout
    assert await posted(surge, "fees:simulated:USD") == 5000 * 220 // 10_000 + 30
    unknown = await run_cli(
        database_url, tmp_path, "fees", "sweep", "--processor", "nope", "--from", "2000-01-01", "--to", "2000-01-02"
    )
    assert unknown.returncode == 2 and "no processor 'nope'" in unknown.stderr
