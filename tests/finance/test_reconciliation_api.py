"""Reconciliation end to end: the served engine and the simulated processor's own record, three discrepancies made
on purpose (a missing ledger entry, a fee mismatch, a payout that does not match), found, reported as JSON, CSV
and by the CLI, re-run idempotently, resolved with audited adjusting entries, and cleared by the next run."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from adapters.base import ChargeRequest, ChargeStatus
from engine import chart_of_accounts
from engine.keys import Role
from ledger import reads
from ledger.accounts import AccountDirectory
from ledger.check import check_ledger
from ledger.entries import transfer
from ledger.money import Money
from ledger.posting import post_entries
from tests.commands import run_cli
from tests.finance.conftest import Surge, donation, donor, insert_donation, simulated_processor

ROOT = Path(__file__).resolve().parents[2]


async def post_webhook(surge: Surge, payload: bytes, headers: dict[str, str]) -> None:
    response = await surge.client.post("/v1/webhooks/simulated", data=payload, headers=headers)
    assert response.status == 200, await response.text()


async def reconcile_now(surge: Surge, start: datetime, role: Role = Role.FINANCE) -> tuple[int, dict[str, Any]]:
    body = {
        "processor": "simulated",
        "from": start.isoformat(),
        "to": (datetime.now(UTC) + timedelta(minutes=1)).replace(second=0, microsecond=0).isoformat(),
        "slack_s": 60,
    }
    response = await surge.client.post("/v1/reconciliations", json=body, headers=surge.auth(role))
    return response.status, await response.json()


async def make_discrepancies(surge: Surge) -> dict[str, Any]:
    """Normal traffic that agrees, then one of each discrepancy; returns what the test needs to know."""
    processor = simulated_processor(surge)
    # Agreeing traffic: donations, a partial refund, a dispute won back — all booked by the engine itself.
    _, kept = await surge.donate(donation(5_000))
    _, refunded = await surge.donate(donation(8_000, first_name="Ann"))
    response = await surge.client.post(
        f"/v1/donations/{refunded['id']}/refunds",
        json={"amount": 3_000},
        headers={**surge.auth(Role.FINANCE), "Idempotency-Key": "refund-1"},
    )
    assert response.status == 200, await response.text()
    opened = await processor.create_dispute(kept["processor_reference"])
    await post_webhook(surge, opened.payload, opened.headers)
    won = await processor.close_dispute(opened.object_id, won=True)
    await post_webhook(surge, won.payload, won.headers)

    # 1. A charge the processor made whose ledger entry never got posted (the engine knows the donation).
    orphan = await insert_donation(
        surge.pool, amount=10_000, settled_at=datetime.now(UTC), person=donor("Olive", "Orphan")
    )
    charged = await processor.charge(
        ChargeRequest(f"surge-{orphan}", orphan, Money(10_000, "USD"), "pm_card_visa", "demo")
    )
    assert charged.status is ChargeStatus.SUCCEEDED and charged.fee is not None
    # 2. A charge whose fee the ledger booked wrong: 10 cents instead of the processor's fee.
    fee_wrong = await insert_donation(
        surge.pool, amount=5_000, settled_at=datetime.now(UTC), person=donor("Fay", "Fee")
    )
    charged_fee = await processor.charge(
        ChargeRequest(f"surge-{fee_wrong}", fee_wrong, Money(5_000, "USD"), "pm_card_visa", "demo")
    )
    assert charged_fee.fee is not None and charged_fee.fee.amount_minor != 10
    usd = "USD"
    entries = [
        transfer(
            fee_wrong,
            debit=chart_of_accounts.clearing("simulated", usd),
            credit=chart_of_accounts.contributions("demo"),
            money=Money(5_000, usd),
            metadata={"donation": fee_wrong, "campaign": "demo"},
        ),
        transfer(
            f"fee:{fee_wrong}",
            debit=chart_of_accounts.fees("simulated", usd),
            credit=chart_of_accounts.clearing("simulated", usd),
            money=Money(10, usd),
            metadata={"donation": fee_wrong},
        ),
    ]
    # 3. The processor pays out its whole balance; the ledger books the payout 1.00 short (a hand-keyed entry).
    payout = await processor.pay_out()
    assert payout is not None
    paid = orjson.loads(payout.payload)["data"]["object"]
    entries.append(
        transfer(
            f"payout:simulated:{paid['id']}",
            debit=chart_of_accounts.bank("simulated", usd),
            credit=chart_of_accounts.clearing("simulated", usd),
            money=Money(paid["amount"] - 100, usd),
            memo="payout keyed by hand",
        )
    )
    async with surge.pool.acquire() as connection, connection.transaction():
        results = await post_entries(connection, AccountDirectory(), entries)
    assert all(r.outcome.ok for r in results)
    return {
        "orphan": orphan,
        "orphan_fee": charged.fee.amount_minor,
        "fee_wrong": fee_wrong,
        "fee": charged_fee.fee.amount_minor,
        "payout": paid["id"],
        "paid": paid["amount"],
    }


def by_kind(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {x["kind"]: x for x in run["exceptions"]}


async def test_discrepancies_are_found_reported_resolved_and_cleared(
    surge: Surge, database_url: str, tmp_path: Path
) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    made = await make_discrepancies(surge)

    status, run = await reconcile_now(surge, start)
    assert status == 201, run
    found = by_kind(run)
    assert sorted(found) == ["amount_mismatch", "fee_mismatch", "missing_in_ledger", "payout_balance_mismatch"]
    missing = found["missing_in_ledger"]
    assert (missing["subject"], missing["processor_amount"], missing["ledger_amount"]) == (
        f"charge:{made['orphan']}",
        10_000,
        None,
    )
    assert missing["proposed_adjustment"] == [
        {"account": "clearing:simulated:USD", "amount": 10_000 - made["orphan_fee"], "currency": "USD"},
        {"account": "fees:simulated:USD", "amount": made["orphan_fee"], "currency": "USD"},
        {"account": "contributions:demo", "amount": -10_000, "currency": "USD"},
    ]
    fee = found["fee_mismatch"]
    assert (fee["subject"], fee["processor_amount"], fee["ledger_amount"], fee["difference"]) == (
        f"charge:{made['fee_wrong']}",
        made["fee"],
        10,
        made["fee"] - 10,
    )
    payout = found["amount_mismatch"]
    assert (payout["subject"], payout["processor_amount"], payout["ledger_amount"]) == (
        f"payout:{made['payout']}",
        -made["paid"],
        -(made["paid"] - 100),
    )
    balance = found["payout_balance_mismatch"]
    # The payout swept the missed charge's net and the right fee; the ledger's clearing account lacked both.
    assert balance["processor_amount"] == made["paid"]
    assert balance["difference"] == (10_000 - made["orphan_fee"]) + (10 - made["fee"])
    assert balance["proposed_adjustment"] is None
    assert run["matched"] >= 4  # two donations, a refund, a dispute
    usd = run["summary"]["USD"]
    assert usd["processor_payouts"] == -made["paid"] and usd["ledger_payouts"] == -(made["paid"] - 100)

    # Idempotent re-run: the same result, the same exception rows, and the run says so.
    status, again = await reconcile_now(surge, start)
    assert status == 201
    assert again["result_digest"] == run["result_digest"] and again["same_result_as"] == run["id"]
    assert sorted(x["id"] for x in again["exceptions"]) == sorted(x["id"] for x in run["exceptions"])
    assert await surge.pool.fetchval("SELECT count(*) FROM finance.reconciliation_exceptions") == 4

    # The exceptions as CSV, from the run and from the open list.
    response = await surge.client.get(f"/v1/reconciliations/{run['id']}?format=csv", headers=surge.auth(Role.FINANCE))
    assert response.status == 200 and response.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(await response.text())))
    assert sorted(r["kind"] for r in rows) == sorted(found)
    fee_row = next(r for r in rows if r["kind"] == "fee_mismatch")
    assert fee_row["ledger_amount"] == "0.10" and fee_row["status"] == "open"
    response = await surge.client.get("/v1/reconciliations/exceptions?status=open", headers=surge.auth(Role.FINANCE))
    assert len((await response.json())["data"]) == 4

    # The CLI reconciles the same window against the same record and agrees.
    cli = await run_cli(
        database_url,
        tmp_path,
        "reconcile",
        "--processor",
        "simulated",
        "--from",
        run["from"],
        "--to",
        run["to"],
        "--slack-s",
        "60",
        "--csv",
        str(tmp_path / "exceptions.csv"),
    )
    assert cli.returncode == 1, cli.stderr
    assert f"same result as run #{again['id']}" in cli.stdout and "fee_mismatch" in cli.stdout
    assert len(list(csv.DictReader((tmp_path / "exceptions.csv").open()))) == 4

    # Resolution: the proposed entries for three (one from the CLI), with who/when/why; the balance one needs legs.
    for kind in ("missing_in_ledger", "amount_mismatch"):
        response = await surge.client.post(
            f"/v1/reconciliations/exceptions/{found[kind]['id']}/resolve",
            json={"memo": f"{kind}: booked from the processor's record"},
            headers=surge.auth(Role.FINANCE),
        )
        assert response.status == 201, await response.text()
        resolved = await response.json()
        assert resolved["status"] == "resolved"
        assert resolved["adjustment"]["resolved_by"].startswith("key:")
    cli = await run_cli(
        database_url,
        tmp_path,
        "reconciliations",
        "resolve",
        str(fee["id"]),
        "--memo",
        "fee per statement",
        "--by",
        "ana",
    )
    assert cli.returncode == 0, cli.stderr
    response = await surge.client.post(
        f"/v1/reconciliations/exceptions/{balance['id']}/resolve",
        json={"memo": "explain"},
        headers=surge.auth(Role.FINANCE),
    )
    assert response.status == 400 and (await response.json())["error"]["code"] == "adjustment_invalid"
    response = await surge.client.post(
        f"/v1/reconciliations/exceptions/{missing['id']}/resolve",
        json={"memo": "twice"},
        headers=surge.auth(Role.FINANCE),
    )
    assert response.status == 409
    adjustments = await surge.pool.fetch("SELECT resolved_by, memo FROM finance.reconciliation_adjustments ORDER BY id")
    assert [a["resolved_by"] for a in adjustments][-1] == "ana"
    assert {a["memo"] for a in adjustments} >= {"fee per statement"}

    # The next run finds the books agreeing; the balance exception clears without an entry of its own.
    status, after = await reconcile_now(surge, start)
    assert status == 201 and after["exceptions"] == [], after["exceptions"]
    response = await surge.client.get("/v1/reconciliations/exceptions", headers=surge.auth(Role.FINANCE))
    statuses = {x["kind"]: x["status"] for x in (await response.json())["data"]}
    assert statuses == {
        "missing_in_ledger": "resolved",
        "fee_mismatch": "resolved",
        "amount_mismatch": "resolved",
        "payout_balance_mismatch": "cleared",
    }
    async with surge.pool.acquire() as connection:
        assert (await check_ledger(connection)).ok
        assert (await reads.balance(connection, "clearing:simulated:USD")).posted == 0  # all paid out
    # Adjusting entries are immutable ledger entries, and so is their audit row.
    async with surge.pool.acquire() as connection:
        try:
            await connection.execute("UPDATE finance.reconciliation_adjustments SET memo = 'changed'")
        except Exception as error:  # asyncpg raises the database's own error class
            assert "append-only" in str(error)
        else:
            raise AssertionError("an adjustment's memo could be rewritten")


async def test_reconciliation_needs_a_finance_key_and_valid_parameters(surge: Surge) -> None:
    start = datetime.now(UTC) - timedelta(hours=1)
    status, _ = await reconcile_now(surge, start, Role.FORM)
    assert status == 403
    for bad in (
        {"processor": "nope", "from": start.isoformat(), "to": datetime.now(UTC).isoformat()},
        {"processor": "simulated", "from": "yesterday", "to": datetime.now(UTC).isoformat()},
        {"processor": "simulated", "from": start.isoformat(), "to": start.isoformat()},
        {"processor": "simulated", "from": "2026-01-01T00:00:00", "to": "2026-01-02T00:00:00"},
    ):
        response = await surge.client.post("/v1/reconciliations", json=bad, headers=surge.auth(Role.FINANCE))
        assert response.status in (400, 404), bad
    status, empty = await reconcile_now(surge, start)
    assert status == 201 and empty["exceptions"] == [] and empty["matched"] == 0
    response = await surge.client.get("/v1/reconciliations", headers=surge.auth(Role.FINANCE))
    assert [r["id"] for r in (await response.json())["data"]] == [empty["id"]]
    assert (await surge.client.get("/v1/reconciliations/999", headers=surge.auth(Role.FINANCE))).status == 404
