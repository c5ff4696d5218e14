"""The chaos rehearsal's parts, each proved on its own: the schedule is the seed's, the processor's live control
opens windows, a worker really dies and comes back, PostgreSQL really stops and comes back, a webhook really
arrives twice, and the audit catches each planted discrepancy at the money edges."""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from adapters.simulated import SimulatedConfig, SimulatedProcessor
from adapters.simulated.faults import FaultControl, FaultControlFile
from engine import chart_of_accounts
from engine.keys import Role
from ledger.accounts import AccountDirectory
from ledger.entries import transfer
from ledger.money import Money
from ledger.posting import post_entries_or_raise
from loadtest.audit import AuditReport, audit_run
from loadtest.audit_money import audit_commands, audit_money_and_events
from loadtest.chaos.postgres import PostgresControl
from loadtest.chaos.processor import write_control
from loadtest.chaos.schedule import DISRUPTIVE, ChaosOptions, FaultKind, build_schedule
from loadtest.chaos.timeouts import TIMEOUT_CARDS, with_timeouts
from loadtest.chaos.webhooks import WebhookDeliverer
from loadtest.chaos.workers import EngineWorkers
from loadtest.engine_process import embedded_database_in_folder, prepare_database
from loadtest.traffic import Kind, Target, TrafficMix, TrafficPlan
from tests.e2e.conftest import donation, start_surge, surge_settings

# ---- the schedule ------------------------------------------------------------------------------------------------


def test_the_schedule_is_the_seeds_alone() -> None:
    first, again, other = build_schedule(7, 60), build_schedule(7, 60), build_schedule(8, 60)
    assert first == again
    assert first != other
    kinds = {fault.kind for fault in first}
    assert set(DISRUPTIVE) <= kinds and {FaultKind.REFUNDS, FaultKind.DISPUTE_OPEN, FaultKind.DISPUTE_CLOSE} <= kinds
    assert all(fault.at_s > 0 and fault.end_s < 60 for fault in first)
    disruptive = sorted((f for f in first if f.kind in DISRUPTIVE), key=lambda f: f.at_s)
    assert all(a.end_s <= b.at_s for a, b in itertools.pairwise(disruptive)), "windows overlap"
    assert [f.at_s for f in first] == sorted(f.at_s for f in first)


def test_postgres_is_left_alone_when_it_is_not_ours() -> None:
    faults = build_schedule(3, 90, ChaosOptions(postgres=False))
    assert FaultKind.POSTGRES_STOP not in {fault.kind for fault in faults}
    assert sum(1 for f in build_schedule(3, 90) if f.kind is FaultKind.POSTGRES_STOP) == 2  # one per 45 s


def test_timeout_windows_turn_donations_into_hanging_charges() -> None:
    target = Target("127.0.0.1", 8000, "pk_test")
    plan = TrafficPlan(TrafficMix.clean(), target, seed=1, run_id="t").requests([i * 0.05 for i in range(600)], 30)
    faults = [f for f in build_schedule(1, 30) if f.kind is FaultKind.TIMEOUTS]
    changed_plan, changed = with_timeouts(plan, faults, seed=1)
    assert changed > 0 and changed_plan == with_timeouts(plan, faults, seed=1)[0]
    hanging = [r for r in changed_plan if r.kind is Kind.TIMEOUT]
    assert len(hanging) == changed
    for request in hanging:
        head, _, payload = request.data.partition(b"\r\n\r\n")
        assert f"Content-Length: {len(payload)}".encode() in head
        assert orjson.loads(payload)["payment_method"] in TIMEOUT_CARDS
        assert any(f.at_s <= request.due_s < f.end_s for f in faults)
    assert {orjson.loads(r.data.partition(b"\r\n\r\n")[2])["payment_method"] for r in hanging} == set(TIMEOUT_CARDS)


def test_the_live_control_file_opens_outages_and_slowdowns(tmp_path: Path) -> None:
    path = tmp_path / "control.json"
    control = FaultControlFile(str(path))
    assert control.current(0.0) == FaultControl()  # no file yet: no fault
    faults = [f for f in build_schedule(5, 30) if f.kind in (FaultKind.PROCESSOR_OUTAGE, FaultKind.PROCESSOR_SLOW)]
    written = write_control(path, faults, load_started_epoch_s=1000.0)
    current = control.current(1.0)
    outage = next(f for f in faults if f.kind is FaultKind.PROCESSOR_OUTAGE)
    slow = next(f for f in faults if f.kind is FaultKind.PROCESSOR_SLOW)
    assert current.outage_end_epoch_s(1000.0 + outage.at_s) == pytest.approx(1000.0 + outage.end_s)
    assert current.outage_end_epoch_s(1000.0 + outage.end_s) is None  # half-open
    assert current.latency_factor(1000.0 + slow.at_s + 0.01) == slow.detail["factor"]
    assert current.latency_factor(999.0) == 1.0 and written["outages"]
    path.write_text("{not json")  # a torn write keeps the last good control
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert control.current(2.0) == current


# ---- the executors, for real -------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_killed_worker_is_started_again_and_the_other_serves_meanwhile(tmp_path: Path) -> None:
    with embedded_database_in_folder() as (url, _):
        await prepare_database(url)
        workers = EngineWorkers(url, tmp_path, {}, count=2)
        await workers.start()
        try:
            old_pid = workers.pid_of(1)
            assert old_pid is not None and old_pid != workers.pid_of(0)
            assert await workers.kill(1) == -9  # SIGKILL: no shutdown at all
            with pytest.raises(ProcessLookupError):
                os.kill(old_pid, 0)
            async with aiohttp.ClientSession() as session, session.get(f"{workers.url}/readyz") as response:
                assert response.status == 200  # the surviving worker answers on the shared port
            new_pid = await workers.restart(1)
            assert new_pid != old_pid and workers.pid_history()["1"] == [old_pid, new_pid]
            os.kill(new_pid, 0)
        finally:
            await workers.stop()


@pytest.mark.slow
async def test_postgres_is_stopped_immediately_and_comes_back_with_its_data() -> None:
    with embedded_database_in_folder() as (url, folder):
        connection = await asyncpg.connect(url)
        await connection.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)")
        control = PostgresControl(folder, url)
        before = control.server_pid()
        assert before is not None
        await control.stop_immediately()
        assert control.server_pid() is None
        with pytest.raises((OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
            await connection.fetchval("SELECT 1")
        with pytest.raises((OSError, asyncpg.PostgresError)):
            await asyncpg.connect(url)
        await control.start()
        after = control.server_pid()
        assert after is not None and after != before
        connection = await asyncpg.connect(url)
        assert await connection.fetchval("SELECT n FROM kept") == 42  # committed before the crash: recovered
        await connection.close()


# ---- webhooks delivered twice, and the money audit's planted discrepancies ---------------------------------------


@dataclasses.dataclass
class MoneyRun:
    url: str
    pool: asyncpg.Pool
    database_url: str
    processor: SimulatedProcessor
    deliverer: WebhookDeliverer
    refunds: dict[str, dict[str, Any]]
    donations: list[str]
    dispute: str

    async def audit(self, **overrides: Any) -> list[str]:
        report = AuditReport()
        arguments: dict[str, Any] = {
            "refunds_acknowledged": self.refunds,
            "events_acknowledged": self.deliverer.log.acknowledged,
            **overrides,
        }
        async with self.pool.acquire() as connection:
            await audit_money_and_events(report, connection, **arguments)
        return report.problems


@pytest.fixture
async def money_run(database_url: str, tmp_path: Path) -> AsyncIterator[MoneyRun]:
    """Two donations, a partial refund, a dispute; every webhook delivered to the engine twice over HTTP."""
    _, client, pool, keys = await start_surge(database_url, surge_settings(database_url, tmp_path))
    url = str(client.make_url("")).rstrip("/")
    processor = SimulatedProcessor(pool, SimulatedConfig(), name="simulated")
    options = ChaosOptions(webhook_duplicate_share=1.0, webhook_delay_share=0.0)
    deliverer = WebhookDeliverer(processor, url, seed=1, options=options, processor_name="simulated")
    try:
        async with aiohttp.ClientSession() as session:
            donations = []
            for n in range(2):
                headers = {"Authorization": f"Bearer {keys[Role.FORM]}", "Idempotency-Key": f"money-{n}"}
                body = donation(3000 + n, first_name=f"Mo{n}")
                async with session.post(f"{url}/v1/donations", json=body, headers=headers) as response:
                    assert response.status == 201, await response.text()
                    donations.append((await response.json())["id"])
            headers = {"Authorization": f"Bearer {keys[Role.FINANCE]}", "Idempotency-Key": "money-refund"}
            async with session.post(
                f"{url}/v1/donations/{donations[0]}/refunds", json={"amount": 1000}, headers=headers
            ) as response:
                assert response.status == 200, await response.text()
                refund = await response.json()
        reference = await pool.fetchval("SELECT processor_reference FROM surge.donations WHERE id = $1", donations[1])
        dispute = (await processor.create_dispute(reference)).object_id
        await deliverer.finish(timeout_s=30)  # reads the events, delivers each twice, waits for every 2xx
        refunds = {refund["id"]: {"donation": donations[0], "amount": 1000, "status": refund["status"]}}
        yield MoneyRun(url, pool, database_url, processor, deliverer, refunds, donations, dispute)
    finally:
        await client.close()
        await pool.close()


@pytest.mark.slow
async def test_every_webhook_was_delivered_twice_and_applied_once(money_run: MoneyRun) -> None:
    log = money_run.deliverer.log
    assert set(log.seen.values()) == {"refund.created", "charge.dispute.created"}
    assert all(count == 2 for count in log.acknowledged.values()), log.acknowledged
    assert sum(log.duplicates_answered.values()) == len(log.seen)  # the second delivery changed nothing
    recorded = await money_run.pool.fetchval("SELECT count(*) FROM surge.processor_events")
    assert recorded == len(log.seen)
    disputed = await money_run.pool.fetchval(
        "SELECT disputed_minor FROM surge.donations WHERE id = $1", money_run.donations[1]
    )
    assert disputed == 3001  # the whole amount, once


@pytest.mark.slow
async def test_an_honest_money_run_passes_and_so_do_reconciliation_and_ledger_check(money_run: MoneyRun) -> None:
    assert await money_run.audit() == []
    report = AuditReport()
    await audit_commands(report, money_run.database_url, time.time() - 60)
    assert report.problems == [] and report.checked["reconciliation_exit"] == 0, report.problems
    assert report.checked["ledger_check_exit"] == 0


@pytest.mark.slow
async def test_a_refund_amount_left_reserved_is_caught(money_run: MoneyRun) -> None:
    donation_id = money_run.donations[0]  # the other one is wholly disputed: nothing left to reserve
    await money_run.pool.execute("UPDATE surge.donations SET refund_reserved_minor = 250 WHERE id = $1", donation_id)
    assert f"{donation_id}: 250 still reserved for refunds after the run" in await money_run.audit()


@pytest.mark.slow
async def test_a_refund_booked_twice_is_caught(money_run: MoneyRun) -> None:
    donation_id = money_run.donations[0]
    async with money_run.pool.acquire() as connection, connection.transaction():
        # What a second booking of the same refund would leave: a refund booked from an unnamed charge.refunded
        # (the only succeeded refund the database lets stand without a processor reference), and its entry.
        await connection.execute(
            """INSERT INTO surge.refunds (id, donation_id, amount_minor, currency, status, origin)
               VALUES ('re_planted', $1, 1000, 'USD', 'succeeded', 'processor_charge')""",
            donation_id,
        )
        await connection.execute(
            "UPDATE surge.donations SET refunded_minor = refunded_minor + 1000 WHERE id = $1", donation_id
        )
        entry = transfer(
            "re_planted",
            debit=chart_of_accounts.refunds("demo"),
            credit=chart_of_accounts.clearing("simulated", "USD"),
            money=Money(1000, "USD"),
            memo="refund",
            metadata={"donation": donation_id},
        )
        await post_entries_or_raise(connection, AccountDirectory(), [entry])
    problems = await money_run.audit()
    assert f"refund re_planted ({donation_id}): booked for 1000 but the processor made no such refund" in problems
    assert f"{donation_id}: refunded 2000 on the donation, 2000 in its refunds, 1000 at the processor" in problems
    report = AuditReport()
    await audit_commands(report, money_run.database_url, time.time() - 60)
    assert any(p.startswith("reconciliation:") for p in report.problems), report.problems


@pytest.mark.slow
async def test_a_lost_webhook_event_is_caught(money_run: MoneyRun) -> None:
    event_id = next(e for e, kind in money_run.deliverer.log.seen.items() if kind == "charge.dispute.created")
    await money_run.pool.execute("DELETE FROM surge.processor_events WHERE event_id = $1", event_id)
    problems = await money_run.audit()
    assert f"webhook {event_id} (charge.dispute.created): sent by the processor, never recorded by the engine" in (
        problems
    )


@pytest.mark.slow
async def test_a_fee_the_books_disagree_with_and_a_key_giving_two_refunds_are_caught(money_run: MoneyRun) -> None:
    donation_id = money_run.donations[1]
    fee = await money_run.pool.fetchval("SELECT fee FROM simulator.charges WHERE donation_id = $1", donation_id)
    await money_run.pool.execute("UPDATE surge.donations SET fee_minor = 0 WHERE id = $1", donation_id)
    problems = await money_run.audit(key_conflicts=["key k on don_x answered with refunds ['re_a', 're_b']"])
    assert f"{donation_id}: the processor's fee is {fee}, the donation records 0" in problems
    assert "refund idempotency: key k on don_x answered with refunds ['re_a', 're_b']" in problems


@pytest.mark.slow
async def test_a_donation_booked_twice_is_caught(money_run: MoneyRun) -> None:
    donation_id = money_run.donations[1]
    async with money_run.pool.acquire() as connection, connection.transaction():
        entry = transfer(
            f"{donation_id}-again",
            debit=chart_of_accounts.clearing("simulated", "USD"),
            credit=chart_of_accounts.contributions("demo"),
            money=Money(3001, "USD"),
            memo="donation",
            metadata={"donation": donation_id, "campaign": "demo"},
        )
        await post_entries_or_raise(connection, AccountDirectory(), [entry])
    async with money_run.pool.acquire() as connection:
        report = await audit_run(connection, {donation_id: 3001})
    assert f"{donation_id}: acknowledged and succeeded but in the ledger 2 times" in report.problems


@pytest.mark.slow
async def test_the_limit_counts_what_the_donor_still_gives(money_run: MoneyRun) -> None:
    refunded, disputed = money_run.donations  # 3000 with 1000 refunded; 3001 under an open dispute
    await money_run.pool.execute("UPDATE surge.campaigns SET contribution_limit_minor = 2500 WHERE slug = 'demo'")
    async with money_run.pool.acquire() as connection:
        problems = (await audit_run(connection, {})).problems
    keys = dict(await money_run.pool.fetch("SELECT id, donor_key FROM surge.donations"))
    over = [p for p in problems if "over the 2500 limit" in p]
    assert over == [f"donor {keys[disputed]} gave 3001 to demo for 2026-general, over the 2500 limit"], problems
    assert not any(keys[refunded] in p for p in problems)  # gave 3000, got 1000 back: 2000 counts
