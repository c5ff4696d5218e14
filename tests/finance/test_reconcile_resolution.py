"""Resolving reconciliation exceptions corrects the books once: never an exception a later run cleared, never a
proposal the ledger has moved past (the correction is worked out again, or refused), one correction from two
concurrent resolutions, and concurrent runs of one processor recorded in the order they read the books.

The scenario throughout: the simulated processor charged a donation whose ledger entries were never posted (a
``missing_in_ledger`` exception); the engine's late booking of it is posted by hand when the test needs it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg

from adapters.base import BalanceTransaction, BalanceTransactionType, ChargeRequest, ChargeStatus, Processor
from engine import chart_of_accounts
from engine.audit import Actor
from engine.finance.reconcile.adjustments import proposed_legs
from engine.finance.reconcile.matching import reconcile
from engine.finance.reconcile.model import ExceptionKind, LedgerItem, Window
from engine.finance.reconcile.subjects import processor_item
from engine.finance.reconciliation import run_reconciliation
from engine.keys import Role
from ledger import reads
from ledger.accounts import AccountDirectory
from ledger.entries import EntryRequest, Leg, transfer
from ledger.money import Money
from ledger.posting import post_entries
from tests.finance.conftest import Surge, donor, insert_donation, simulated_processor
from tests.finance.test_reconciliation_api import reconcile_now
from tests.waiting import wait_until

USD = "USD"
AMOUNT = 10_000


class Orphan:
    """A charge the processor made and the ledger never booked."""

    def __init__(self, donation_id: str, fee: int) -> None:
        self.donation_id, self.fee = donation_id, fee

    def charge_entry(self) -> EntryRequest:
        return transfer(
            self.donation_id,
            debit=chart_of_accounts.clearing("simulated", USD),
            credit=chart_of_accounts.contributions("demo"),
            money=Money(AMOUNT, USD),
            metadata={"donation": self.donation_id, "campaign": "demo"},
        )

    def fee_entry(self) -> EntryRequest:
        return transfer(
            f"fee:{self.donation_id}",
            debit=chart_of_accounts.fees("simulated", USD),
            credit=chart_of_accounts.clearing("simulated", USD),
            money=Money(self.fee, USD),
            metadata={"donation": self.donation_id},
        )


async def orphan_charge(surge: Surge) -> Orphan:
    processor = simulated_processor(surge)
    orphan = await insert_donation(surge.pool, amount=AMOUNT, settled_at=datetime.now(UTC), person=donor("Ola", "Orr"))
    charged = await processor.charge(
        ChargeRequest(f"surge-{orphan}", orphan, Money(AMOUNT, USD), "pm_card_visa", "demo")
    )
    assert charged.status is ChargeStatus.SUCCEEDED and charged.fee is not None
    return Orphan(orphan, charged.fee.amount_minor)


async def post(surge: Surge, *entries: EntryRequest) -> None:
    async with surge.pool.acquire() as connection, connection.transaction():
        results = await post_entries(connection, AccountDirectory(), list(entries))
    assert all(r.outcome.ok for r in results), results


async def resolve(surge: Surge, exception_id: int, **body: Any) -> tuple[int, dict[str, Any]]:
    response = await surge.client.post(
        f"/v1/reconciliations/exceptions/{exception_id}/resolve",
        json={"memo": "booked from the processor's record", **body},
        headers=surge.auth(Role.FINANCE),
    )
    return response.status, await response.json()


async def open_missing(surge: Surge, start: datetime) -> int:
    status, run = await reconcile_now(surge, start)
    assert status == 201, run
    [found] = run["exceptions"]
    assert (found["kind"], found["status"]) == ("missing_in_ledger", "open")
    exception_id: int = found["id"]
    return exception_id


async def balance(surge: Surge, account: str) -> int:
    async with surge.pool.acquire() as connection:
        posted: int = (await reads.balance(connection, account)).posted
    return posted


async def adjustment_count(surge: Surge) -> int:
    count: int = await surge.pool.fetchval("SELECT count(*) FROM finance.reconciliation_adjustments")
    return count


def window_start() -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)


async def test_an_exception_a_later_run_cleared_is_not_resolved(surge: Surge) -> None:
    start = window_start()
    orphan = await orphan_charge(surge)
    exception_id = await open_missing(surge, start)
    # The engine's late booking arrives; the next run finds the charge matched and clears the exception.
    await post(surge, orphan.charge_entry(), orphan.fee_entry())
    status, run = await reconcile_now(surge, start)
    assert status == 201 and run["exceptions"] == []

    status, body = await resolve(surge, exception_id)
    assert status == 409, body
    assert body["error"]["code"] == "exception_cleared" and f"#{run['id']}" in body["error"]["message"]
    assert await adjustment_count(surge) == 0
    assert await balance(surge, "contributions:demo") == -AMOUNT  # booked once


async def test_a_proposal_the_ledger_moved_past_is_worked_out_again(surge: Surge) -> None:
    start = window_start()
    orphan = await orphan_charge(surge)
    exception_id = await open_missing(surge, start)
    # Since the run, the engine booked the charge but not its fee: only the fee is left to correct.
    await post(surge, orphan.charge_entry())

    status, body = await resolve(surge, exception_id)
    assert status == 201, body
    entry_id = body["adjustment"]["entry_id"]
    legs = await surge.pool.fetch(
        """SELECT a.code, p.amount FROM ledger.postings p JOIN ledger.accounts a ON a.id = p.account_id
            WHERE p.entry_id = $1 ORDER BY a.code""",
        entry_id,
    )
    assert [(r["code"], r["amount"]) for r in legs] == [
        ("clearing:simulated:USD", -orphan.fee),
        ("fees:simulated:USD", orphan.fee),
    ]
    assert await balance(surge, "contributions:demo") == -AMOUNT  # not twice
    status, run = await reconcile_now(surge, start)
    assert status == 201 and run["exceptions"] == [], run["exceptions"]


async def test_a_proposal_the_ledger_now_agrees_with_is_refused(surge: Surge) -> None:
    start = window_start()
    orphan = await orphan_charge(surge)
    exception_id = await open_missing(surge, start)
    await post(surge, orphan.charge_entry(), orphan.fee_entry())  # booked in full, no run since

    for legs in (None, [{"account": "clearing:simulated:USD", "amount": 1, "currency": USD}] * 2):
        status, body = await resolve(surge, exception_id, **({"legs": legs} if legs else {}))
        assert status == 409, body
        assert body["error"]["code"] == "exception_no_longer_applies"
    assert await adjustment_count(surge) == 0
    assert await balance(surge, "contributions:demo") == -AMOUNT


async def lock_waiters(pool: asyncpg.Pool) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )
    return count


async def test_two_concurrent_resolutions_make_one_correction(surge: Surge) -> None:
    start = window_start()
    await orphan_charge(surge)
    exception_id = await open_missing(surge, start)
    # Hold the exception's row so that both resolutions are in flight together, then let them go.
    async with surge.pool.acquire() as holder:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("SELECT 1 FROM finance.reconciliation_exceptions WHERE id = $1 FOR UPDATE", exception_id)
        both = [asyncio.ensure_future(resolve(surge, exception_id)) for _ in range(2)]
        await wait_until(lambda: _count_at_least(surge.pool, 2), what="both resolutions waiting", timeout=10)
        await transaction.rollback()
    results = await asyncio.gather(*both)
    assert sorted(status for status, _ in results) == [201, 409], results
    refused = next(body for status, body in results if status == 409)
    assert refused["error"]["code"] == "exception_already_resolved"
    assert await adjustment_count(surge) == 1
    assert (
        await surge.pool.fetchval(
            "SELECT count(*) FROM ledger.entries WHERE reference = $1", f"reconcile:simulated:{exception_id}"
        )
        == 1
    )
    assert await balance(surge, "contributions:demo") == -AMOUNT


async def _count_at_least(pool: asyncpg.Pool, wanted: int) -> bool:
    return await lock_waiters(pool) >= wanted


class HeldRead:
    """The served simulated processor, whose record can be held back while a run is between its two reads."""

    def __init__(self, inner: Processor) -> None:
        self.inner, self.name = inner, inner.name
        self.reading, self.release = asyncio.Event(), asyncio.Event()

    async def balance_transactions(self, start: datetime, end: datetime) -> list[BalanceTransaction]:
        self.reading.set()
        await self.release.wait()
        return list(await self.inner.balance_transactions(start, end))


async def test_concurrent_runs_are_serialised_and_record_the_books_in_order(surge: Surge) -> None:
    start = window_start()
    orphan = await orphan_charge(surge)
    window = Window(start, datetime.now(UTC) + timedelta(minutes=1), slack=timedelta(seconds=60))
    processor = simulated_processor(surge)
    held = HeldRead(processor)
    # Run A reads the ledger (the charge missing) and is held before the processor's record.
    first = asyncio.ensure_future(
        run_reconciliation(surge.pool, cast(Processor, held), "simulated", window, "a", Actor("cli:a"))
    )
    await asyncio.wait_for(held.reading.wait(), timeout=10)
    # The late booking lands, and run B starts: it must wait for A, or A would record a stale view after B.
    await post(surge, orphan.charge_entry(), orphan.fee_entry())
    second = asyncio.ensure_future(run_reconciliation(surge.pool, processor, "simulated", window, "b", Actor("cli:b")))
    await wait_until(
        lambda: second.done() or _count_at_least(surge.pool, 1), what="run B finished or waiting", timeout=10
    )
    assert not second.done(), "run B ran while run A was between reading the ledger and recording"
    held.release.set()
    first_id, second_id = await asyncio.gather(first, second)
    assert first_id < second_id
    rows = await surge.pool.fetch(
        "SELECT kind, first_run_id, cleared_run_id FROM finance.reconciliation_exceptions ORDER BY id"
    )
    # A saw the charge missing; B, which read the books after the booking, cleared it: the latest run's view holds.
    assert [(r["kind"], r["first_run_id"], r["cleared_run_id"]) for r in rows] == [
        ("missing_in_ledger", first_id, second_id)
    ]
    response = await surge.client.get("/v1/reconciliations/exceptions?status=open", headers=surge.auth(Role.FINANCE))
    assert (await response.json())["data"] == []


def test_an_amount_and_a_fee_mismatch_on_one_subject_each_correct_only_their_own_part() -> None:
    """Both exceptions of one subject resolved with their proposals must leave the fee corrected once, not twice."""

    moment = datetime(2026, 3, 1, 12, 5, tzinfo=UTC)
    window = Window(moment - timedelta(minutes=5), moment + timedelta(hours=1))
    charge = BalanceTransaction(
        "txn_1", BalanceTransactionType.CHARGE, Money(5_000, USD), Money(175, USD), moment, "pi_1", "don_1"
    )
    booked = [
        LedgerItem(1, "don_1", "charge:don_1", USD, 4_000, 0, moment, "don_1"),
        LedgerItem(2, "fee:don_1", "charge:don_1", USD, -145, 145, moment, "don_1"),
    ]
    found = {d.kind: d for d in reconcile(window, [processor_item(charge)], booked).discrepancies}
    accounts = {"clearing_account": "clearing", "fees_account": "fees", "counter_account": "contributions"}
    assert proposed_legs(found[ExceptionKind.AMOUNT_MISMATCH], **accounts) == (
        Leg("clearing", 1_000, USD),
        Leg("contributions", -1_000, USD),
    )
    assert proposed_legs(found[ExceptionKind.FEE_MISMATCH], **accounts) == (
        Leg("clearing", -30, USD),
        Leg("fees", 30, USD),
    )
