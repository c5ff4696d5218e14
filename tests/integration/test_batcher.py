"""The group-commit batcher against a real PostgreSQL: grouping, per-item results, back-pressure, failure isolation,
conflict retries, shutdown and the optional batching delay.

No test waits for time to pass: the batching delay runs on a ManualClock that the test advances, and tasks are
synchronised on events (a blocked commit, a clock with a sleeper) rather than on guessed durations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import TypeVar

import asyncpg
import pytest

from ledger.accounts import AccountDirectory, AccountType, ensure_account
from ledger.batcher import BatcherClosedError, BatcherFullError, BatcherLimits, GroupCommitter
from ledger.entries import EntryOutcome, EntryRequest, EntryResult, transfer
from ledger.money import Money
from ledger.posting import post_entries
from tests.waiting import wait_until
from toolkit.clock import ManualClock

T = TypeVar("T")


async def within(awaitable: Awaitable[T], seconds: float = 10) -> T:
    """Await with a bound: a batcher that loses an item must fail the test, not hang it."""
    return await asyncio.wait_for(awaitable, seconds)


@pytest.fixture
async def items_table(pool: asyncpg.Pool) -> AsyncIterator[None]:
    async with pool.acquire() as connection:
        await connection.execute(
            """CREATE TABLE items (
                   value int PRIMARY KEY,
                   transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id())"""
        )
    yield


async def insert_items(connection: asyncpg.Connection, values: Sequence[int]) -> list[str]:
    """Insert the batch with one statement; each item's result is computed by the database, in the item's order."""
    rows = await connection.fetch(
        "INSERT INTO items (value) SELECT unnest($1::int[]) RETURNING value, value * 2 AS doubled", list(values)
    )
    doubled = {row["value"]: row["doubled"] for row in rows}
    return [f"{value}->{doubled[value]}" for value in values]


async def insert_items_one_statement_each(connection: asyncpg.Connection, values: Sequence[int]) -> list[str]:
    for value in values:
        await connection.execute("INSERT INTO items (value) VALUES ($1)", value)
    return [f"{value}->{value * 2}" for value in values]


class Recorder:
    """The batcher's observer: the size of every committed batch."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, name: str, size: int, seconds: float) -> None:
        self.sizes.append(size)


async def stored_values(pool: asyncpg.Pool) -> list[int]:
    return [row["value"] for row in await pool.fetch("SELECT value FROM items ORDER BY value")]


async def test_each_concurrent_submitter_gets_its_own_result(pool: asyncpg.Pool, items_table: None) -> None:
    recorder = Recorder()
    batcher = GroupCommitter(pool, insert_items, BatcherLimits(batch_size_max=50), observer=recorder)
    batcher.start()
    try:
        results = await within(asyncio.gather(*(batcher.submit(value) for value in range(500))))
    finally:
        await within(batcher.stop())
    assert results == [f"{value}->{value * 2}" for value in range(500)]
    assert await stored_values(pool) == list(range(500))
    assert sum(recorder.sizes) == 500
    assert max(recorder.sizes) <= 50


async def test_items_submitted_together_are_committed_together(pool: asyncpg.Pool, items_table: None) -> None:
    recorder = Recorder()
    batcher = GroupCommitter(pool, insert_items, BatcherLimits(batch_size_max=64), observer=recorder)
    batcher.start()
    try:
        await within(asyncio.gather(*(batcher.submit(value) for value in range(200))))
    finally:
        await within(batcher.stop())
    assert sum(recorder.sizes) == 200
    assert max(recorder.sizes) > 1
    assert len(recorder.sizes) < 200
    # The database agrees: one transaction per observed batch, holding that batch's items.
    per_transaction = await pool.fetch("SELECT count(*) AS items FROM items GROUP BY transaction_id")
    assert sorted(row["items"] for row in per_transaction) == sorted(recorder.sizes)


class Gate:
    """A commit function that blocks inside its transaction until released, so that the queue fills."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, connection: asyncpg.Connection, values: Sequence[int]) -> list[str]:
        self.entered.set()
        await self.release.wait()
        return await insert_items(connection, values)


async def started_and_blocked(pool: asyncpg.Pool, gate: Gate, queue_size_max: int) -> tuple[GroupCommitter, list]:
    """A batcher whose only committer holds item 0 in a blocked commit and whose queue is full."""
    limits = BatcherLimits(batch_size_max=1, queue_size_max=queue_size_max, committers=1)
    batcher: GroupCommitter[int, str] = GroupCommitter(pool, gate, limits)
    batcher.start()
    first = asyncio.create_task(batcher.submit(0))
    await within(gate.entered.wait())
    queued = [asyncio.create_task(batcher.submit_nowait(value)) for value in range(1, queue_size_max + 1)]
    await wait_until(lambda: batcher.queue_depth == queue_size_max, what="the items to queue")
    return batcher, [first, *queued]


async def test_submit_nowait_refuses_when_the_queue_is_full(pool: asyncpg.Pool, items_table: None) -> None:
    gate = Gate()
    batcher, tasks = await started_and_blocked(pool, gate, queue_size_max=3)
    try:
        with pytest.raises(BatcherFullError):
            await within(batcher.submit_nowait(99), 1)
        gate.release.set()
        assert await within(asyncio.gather(*tasks)) == [f"{value}->{value * 2}" for value in range(4)]
    finally:
        gate.release.set()
        await within(batcher.stop())
    assert await stored_values(pool) == [0, 1, 2, 3]  # the refused item was never committed


async def test_submit_waits_for_room(pool: asyncpg.Pool, items_table: None) -> None:
    gate = Gate()
    batcher, tasks = await started_and_blocked(pool, gate, queue_size_max=3)
    try:
        waiting = asyncio.create_task(batcher.submit(4))
        await wait_until(lambda: batcher.waiting_for_room, what="the submit to block on the full queue")
        assert not waiting.done()  # back-pressure: it waits for room, it is neither refused nor queued
        assert batcher.queue_depth == 3
        gate.release.set()
        assert await within(waiting) == "4->8"
        assert await within(asyncio.gather(*tasks)) == [f"{value}->{value * 2}" for value in range(4)]
    finally:
        gate.release.set()
        await within(batcher.stop())
    assert await stored_values(pool) == [0, 1, 2, 3, 4]


async def test_an_item_the_database_refuses_fails_alone(pool: asyncpg.Pool, items_table: None) -> None:
    await pool.execute("ALTER TABLE items ADD CHECK (value <> 13)")
    calls: list[list[int]] = []

    async def commit(connection: asyncpg.Connection, values: Sequence[int]) -> list[str]:
        calls.append(list(values))
        return await insert_items_one_statement_each(connection, values)

    # All 30 items wait for each other, so that the bad one (13 breaks the CHECK) is in a batch with others: the
    # clock never moves, so the delay cannot run out first.
    limits = BatcherLimits(batch_size_min=30, batch_delay_ms=5000, committers=1)
    batcher = GroupCommitter(pool, commit, limits, clock=ManualClock())
    batcher.start()
    try:
        results = await within(asyncio.gather(*(batcher.submit(value) for value in range(30)), return_exceptions=True))
    finally:
        await within(batcher.stop())
    assert calls[0] == list(range(30))
    assert isinstance(results[13], asyncpg.CheckViolationError)
    assert [r for n, r in enumerate(results) if n != 13] == [f"{v}->{v * 2}" for v in range(30) if v != 13]
    assert await stored_values(pool) == [v for v in range(30) if v != 13]


async def test_a_bug_in_the_commit_function_fails_its_batch_not_the_committer(
    pool: asyncpg.Pool, items_table: None
) -> None:
    async def commit(connection: asyncpg.Connection, values: Sequence[int]) -> list[str]:
        results = await insert_items(connection, values)
        return results[:-1] if 7 in values else results  # one result short: a bug, not a database error

    batcher = GroupCommitter(pool, commit, BatcherLimits(committers=1))
    batcher.start()
    try:
        with pytest.raises(RuntimeError, match="results"):
            await within(batcher.submit(7))
        assert await within(batcher.submit(8)) == "8->16"  # the committer survived
    finally:
        await within(batcher.stop())


async def test_a_reference_committed_by_another_transaction_meanwhile_answers_exists(pool: asyncpg.Pool) -> None:
    # Another process inserts the same ledger reference while this batch is being written. Our write waits on the
    # other transaction's row; when that commits, the write skips the entry (and its postings) and the batch answers
    # EXISTS with the other entry, in the same attempt: no retry, nothing posted twice.
    async with pool.acquire() as connection:
        await ensure_account(connection, "cash", AccountType.ASSET, "USD")
        await ensure_account(connection, "revenue", AccountType.REVENUE, "USD")
    donation = transfer("don-1", debit="cash", credit="revenue", money=Money(500, "USD"))
    attempts: list[int] = []
    directory = AccountDirectory()

    async def commit(connection: asyncpg.Connection, requests: Sequence[EntryRequest]) -> list[EntryResult]:
        attempts.append(len(requests))
        return await post_entries(connection, directory, requests)

    batcher = GroupCommitter(pool, commit, BatcherLimits(committers=1))
    batcher.start()
    other = await pool.acquire()
    try:
        other_transaction = other.transaction()
        await other_transaction.start()
        other_results = await post_entries(other, AccountDirectory(), [donation])
        assert other_results[0].outcome is EntryOutcome.CREATED
        ours = asyncio.create_task(batcher.submit(donation))
        await wait_for_a_lock_wait(pool)
        await other_transaction.commit()
        result = await within(ours)
    finally:
        await pool.release(other)
        await within(batcher.stop())
    assert result.outcome is EntryOutcome.EXISTS
    assert result.entry_id == other_results[0].entry_id
    assert attempts == [1]
    async with pool.acquire() as connection:
        assert await connection.fetchval("SELECT count(*) FROM ledger.entries") == 1
        assert await connection.fetchval("SELECT posted FROM ledger.balances ORDER BY account_id LIMIT 1") == 500


async def wait_for_a_lock_wait(pool: asyncpg.Pool) -> None:
    """Until some session of this database waits for a lock (here: on another transaction's uncommitted row)."""
    await wait_until(
        lambda: pool.fetchval(
            """SELECT count(*) FROM pg_stat_activity
                WHERE datname = current_database() AND wait_event_type = 'Lock'"""
        ),
        what="the batch to wait for the other transaction's lock",
    )


async def conflicting_when_batched(connection: asyncpg.Connection, values: Sequence[int]) -> list[str]:
    """Loses a race whenever it commits more than one item (a real unique violation from PostgreSQL)."""
    if len(values) > 1:
        await connection.execute("INSERT INTO items (value) VALUES (-1), (-1)")
    return await insert_items(connection, values)


async def test_a_batch_that_keeps_conflicting_is_committed_one_by_one(pool: asyncpg.Pool, items_table: None) -> None:
    attempts: list[int] = []

    async def commit(connection: asyncpg.Connection, values: Sequence[int]) -> list[str]:
        attempts.append(len(values))
        return await conflicting_when_batched(connection, values)

    limits = BatcherLimits(batch_size_min=10, batch_delay_ms=5000, committers=1, conflict_retries_max=3)
    batcher = GroupCommitter(pool, commit, limits, clock=ManualClock())
    batcher.start()
    try:
        results = await within(asyncio.gather(*(batcher.submit(value) for value in range(10))))
    finally:
        await within(batcher.stop())
    assert results == [f"{value}->{value * 2}" for value in range(10)]
    assert attempts == [10] * 4 + [1] * 10  # the batch and its 3 retries, then each item alone
    assert await stored_values(pool) == list(range(10))  # and the failed attempts left nothing behind


async def test_an_item_that_always_conflicts_fails_after_its_retries(pool: asyncpg.Pool, items_table: None) -> None:
    attempts = 0

    async def commit(connection: asyncpg.Connection, values: Sequence[int]) -> list[str]:
        nonlocal attempts
        attempts += 1
        await connection.execute("INSERT INTO items (value) VALUES (-1), (-1)")
        return []

    batcher = GroupCommitter(pool, commit, BatcherLimits(conflict_retries_max=2, committers=1))
    batcher.start()
    try:
        with pytest.raises(asyncpg.UniqueViolationError):
            await within(batcher.submit(1))
    finally:
        await within(batcher.stop())
    assert attempts == 3


async def test_stop_commits_what_is_queued_then_refuses_new_items(pool: asyncpg.Pool, items_table: None) -> None:
    gate = Gate()  # the first batch blocks in its commit, so the rest are still queued when stop() is called
    batcher = GroupCommitter(pool, gate, BatcherLimits(batch_size_max=5, committers=1))
    batcher.start()
    tasks = [asyncio.create_task(batcher.submit(value)) for value in range(50)]
    await within(gate.entered.wait())
    assert batcher.queue_depth == 45
    stopping = asyncio.create_task(batcher.stop())
    await wait_until(lambda: batcher.closed, what="stop() to close the batcher")  # it then waits for the queue
    assert not stopping.done()
    with pytest.raises(BatcherClosedError):
        await within(batcher.submit_nowait(99), 1)
    gate.release.set()
    await within(stopping)
    assert all(task.done() for task in tasks)
    assert [task.result() for task in tasks] == [f"{value}->{value * 2}" for value in range(50)]
    assert await stored_values(pool) == list(range(50))
    with pytest.raises(BatcherClosedError):
        await within(batcher.submit(50), 1)
    with pytest.raises(BatcherClosedError):
        await within(batcher.submit_nowait(51), 1)
    assert await stored_values(pool) == list(range(50))


async def test_a_batching_delay_waits_for_more_items(pool: asyncpg.Pool, items_table: None) -> None:
    recorder = Recorder()
    clock = ManualClock()
    limits = BatcherLimits(batch_size_min=10, batch_delay_ms=5000, committers=1)
    batcher = GroupCommitter(pool, insert_items, limits, observer=recorder, clock=clock)
    batcher.start()
    try:
        first = asyncio.create_task(batcher.submit(0))
        await within(clock.until_sleeping())  # the committer holds item 0 and waits for company
        clock.advance(4.9)
        assert clock.sleepers == 1 and not first.done()  # still within the delay
        results = await within(asyncio.gather(first, *(batcher.submit(value) for value in range(1, 10))))
    finally:
        await within(batcher.stop())
    assert results == [f"{value}->{value * 2}" for value in range(10)]
    assert recorder.sizes == [10]


async def test_a_batching_delay_is_bounded(pool: asyncpg.Pool, items_table: None) -> None:
    recorder = Recorder()
    clock = ManualClock()
    limits = BatcherLimits(batch_size_min=10, batch_delay_ms=500, committers=1)
    batcher = GroupCommitter(pool, insert_items, limits, observer=recorder, clock=clock)
    batcher.start()
    try:
        first = asyncio.create_task(batcher.submit(0))
        await within(clock.until_sleeping())
        clock.advance(0.25)
        assert clock.sleepers == 1 and not first.done()  # half the delay: still waiting
        clock.advance(0.25)  # the delay is over: the lone item goes alone
        assert await within(first) == "0->0"
    finally:
        await within(batcher.stop())
    assert recorder.sizes == [1]


async def test_without_a_delay_a_lone_item_is_committed_at_once(pool: asyncpg.Pool, items_table: None) -> None:
    # Natural group commit: no waiting for company. The clock never moves, so any wait on it would hang the commit.
    clock = ManualClock()
    batcher = GroupCommitter(pool, insert_items, BatcherLimits(batch_size_min=1, committers=1), clock=clock)
    batcher.start()
    try:
        assert await within(batcher.submit(0)) == "0->0"
    finally:
        await within(batcher.stop())
    assert clock.sleepers == 0


@pytest.mark.parametrize(
    "options",
    [
        {"batch_size_min": 0},
        {"batch_size_min": 11, "batch_size_max": 10},
        {"batch_delay_ms": -1},
        {"queue_size_max": 0},
        {"committers": 0},
    ],
)
def test_limits_are_validated(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BatcherLimits(**options)  # type: ignore[arg-type]
