"""Reports: an empty ledger, the Schedule A export against a fixture computed by hand, and campaign and donor
totals that follow the books after donations, a refund and a dispute."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from engine.campaigns import Campaign, create_campaign
from engine.keys import Role
from tests.finance.conftest import Surge, donation, donor, insert_donation, simulated_processor
from tests.finance.test_reconciliation_api import post_webhook, run_cli

REPORTS = ("trial-balance", "campaign-days", "donor-aggregates", "schedule-a")
# The chart's accounts for the demo campaign and the simulated processor, all at zero, in currency and code order.
EMPTY_TRIAL_BALANCE_CSV = (
    "account,type,currency,debit,credit\r\n"
    "bank:simulated:USD,asset,USD,0.00,0.00\r\n"
    "clearing:simulated:USD,asset,USD,0.00,0.00\r\n"
    "contributions:demo,revenue,USD,0.00,0.00\r\n"
    "disputes:demo,revenue,USD,0.00,0.00\r\n"
    "fees:simulated:USD,expense,USD,0.00,0.00\r\n"
    "refunds:demo,revenue,USD,0.00,0.00\r\n"
)


async def get(surge: Surge, path: str) -> tuple[int, Any]:
    response = await surge.client.get(path, headers=surge.auth(Role.FINANCE))
    if response.content_type == "text/csv":
        return response.status, await response.text()
    return response.status, await response.json()


async def test_reports_on_an_empty_ledger(surge: Surge, database_url: str, tmp_path: Path) -> None:
    for name in REPORTS:
        status, body = await get(surge, f"/v1/reports/{name}")
        assert status == 200, body
        if name == "trial-balance":
            # The chart's accounts exist from the start, every one at zero, and the zeros balance.
            assert all(row["debit"] == row["credit"] == 0 for row in body["data"])
            assert body["totals"]["USD"] == {"debit": 0, "credit": 0, "balanced": True}
        else:
            assert body["data"] == [] and body["totals"] == {}
        status, text = await get(surge, f"/v1/reports/{name}?format=csv")
        assert status == 200
        rows = list(csv.reader(io.StringIO(text)))
        assert rows[0] == body["columns"]
        if name == "trial-balance":
            assert text == EMPTY_TRIAL_BALANCE_CSV
        else:
            assert len(rows) == 1
    status, body = await get(surge, "/v1/reports/schedule-a?format=xml")
    assert status == 400 and body["error"]["param"] == "format"
    assert (await surge.client.get("/v1/reports/trial-balance", headers=surge.auth(Role.FORM))).status == 403
    cli = await run_cli(database_url, tmp_path, "report", "schedule-a", "--format", "json")
    assert cli.returncode == 0, cli.stderr
    assert '"data": []' in cli.stdout


def noon(day: str) -> datetime:
    return datetime.combine(date.fromisoformat(day), time(12), UTC)


# Campaign demo: itemization past $200.00 per election, limit $3,500.00. Period: February 2026.
#   Alice  Jan 10 $150.00, Feb 05 $100.00 (+ a declined $1,000.00, + Mar 05 $50.00 after the period)
#          → aggregate $250.00 at the period's end: itemized; only Feb 05 is in the period, aggregate through it $250.00
#   Bob    Feb 10 $200.00 → exactly the threshold, not above it: not itemized
#   Carol  Feb 03 $500.00, $400.00 refunded → $100.00 net: not itemized
#   Dan    Feb 15 $250.00, gave no employer or occupation → itemized, "INFORMATION REQUESTED"
#   Eve    Feb 02 $100.00, Feb 12 $100.00, Feb 20 $100.01 → crosses $200 on the third: all three itemized, with
#          aggregates $100.00, $200.00, $300.01
#   Frank  Mar 02 $300.00 → after the period: not itemized in February
#   Gina   Feb 07 $300.00 to another campaign → not in demo's export
EXPECTED_SCHEDULE_A = (
    "form_type,entity_type,contributor_last_name,contributor_first_name,contributor_street_1,contributor_street_2,"
    "contributor_city,contributor_state,contributor_zip,election,contribution_date,contribution_amount,"
    "contribution_aggregate,contributor_employer,contributor_occupation,transaction_id,campaign,currency,memo,"
    "exceeds_limit\r\n"
    "SA11AI,IND,Able,Alice,5 Elm St,,Springfield,IL,62701,2026-general,2026-02-05,100.00,250.00,Acme,Engineer,"
    "don_alice_2,demo,USD,,false\r\n"
    "SA11AI,IND,Dunn,Dan,3 Elm St,,Springfield,IL,62701,2026-general,2026-02-15,250.00,250.00,"
    "INFORMATION REQUESTED,INFORMATION REQUESTED,don_dan_1,demo,USD,,false\r\n"
    "SA11AI,IND,Evans,Eve,3 Elm St,,Springfield,IL,62701,2026-general,2026-02-02,100.00,100.00,Acme,Engineer,"
    "don_eve_1,demo,USD,,false\r\n"
    "SA11AI,IND,Evans,Eve,3 Elm St,,Springfield,IL,62701,2026-general,2026-02-12,100.00,200.00,Acme,Engineer,"
    "don_eve_2,demo,USD,,false\r\n"
    "SA11AI,IND,Evans,Eve,3 Elm St,,Springfield,IL,62701,2026-general,2026-02-20,100.01,300.01,Acme,Engineer,"
    "don_eve_3,demo,USD,,false\r\n"
)


async def schedule_a_fixture(surge: Surge) -> None:
    alice, eve = donor("Alice", "Able"), donor("Eve", "Evans")
    rows: list[tuple[str, int, str, dict[str, Any], dict[str, Any]]] = [
        ("don_alice_1", 15_000, "2026-01-10", alice, {}),
        ("don_alice_2", 10_000, "2026-02-05", alice, {}),
        ("don_alice_x", 100_000, "2026-02-06", alice, {"status": "declined"}),
        ("don_alice_3", 5_000, "2026-03-05", alice, {}),
        ("don_bob_1", 20_000, "2026-02-10", donor("Bob", "Baker"), {}),
        ("don_carol_1", 50_000, "2026-02-03", donor("Carol", "Cole"), {"refunded": 40_000}),
        ("don_dan_1", 25_000, "2026-02-15", donor("Dan", "Dunn", employer=None, occupation=None), {}),
        ("don_eve_1", 10_000, "2026-02-02", eve, {}),
        ("don_eve_2", 10_000, "2026-02-12", eve, {}),
        ("don_eve_3", 10_001, "2026-02-20", eve, {}),
        ("don_frank_1", 30_000, "2026-03-02", donor("Frank", "Ford"), {}),
        ("don_gina_1", 30_000, "2026-02-07", donor("Gina", "Gray"), {"campaign": "other", "election": "2026-p"}),
    ]
    async with surge.pool.acquire() as connection:
        await create_campaign(connection, Campaign("other", "Other", "USD", "2026-p"))
    for donation_id, amount, day, person, extra in rows:
        await insert_donation(
            surge.pool, donation_id=donation_id, amount=amount, settled_at=noon(day), person=person, **extra
        )


async def test_schedule_a_matches_the_hand_computed_fixture(surge: Surge) -> None:
    await schedule_a_fixture(surge)
    period = "campaign=demo&from=2026-02-01&to=2026-02-28"
    status, text = await get(surge, f"/v1/reports/schedule-a?{period}&format=csv")
    assert status == 200
    assert text == EXPECTED_SCHEDULE_A

    status, body = await get(surge, f"/v1/reports/schedule-a?{period}")
    assert [(r["transaction_id"], r["contribution_amount"], r["contribution_aggregate"]) for r in body["data"]] == [
        ("don_alice_2", 10_000, 25_000),
        ("don_dan_1", 25_000, 25_000),
        ("don_eve_1", 10_000, 10_000),
        ("don_eve_2", 10_000, 20_000),
        ("don_eve_3", 10_001, 30_001),
    ]
    assert body["totals"] == {"USD": {"receipts": 5, "amount": 65_001}}

    # A lower threshold itemizes Bob ($200.00 > $100.00) but not Carol ($100.00 net is not above $100.00).
    status, body = await get(surge, f"/v1/reports/schedule-a?{period}&threshold=10000")
    assert {r["transaction_id"] for r in body["data"]} == {
        "don_alice_2",
        "don_bob_1",
        "don_dan_1",
        "don_eve_1",
        "don_eve_2",
        "don_eve_3",
    }
    # A $250.00 limit: only Eve's third receipt takes an aggregate past it.
    status, body = await get(surge, f"/v1/reports/schedule-a?{period}&limit=25000")
    assert [r["transaction_id"] for r in body["data"] if r["exceeds_limit"]] == ["don_eve_3"]
    # Without the campaign filter, the other campaign's itemized receipt appears under its own election.
    status, body = await get(surge, "/v1/reports/schedule-a?from=2026-02-01&to=2026-02-28")
    assert ("don_gina_1", "2026-p") in {(r["transaction_id"], r["election"]) for r in body["data"]}
    status, body = await get(surge, "/v1/reports/schedule-a?from=2026-02-31")
    assert status == 400 and body["error"]["param"] == "from"


async def test_campaign_days_and_donor_aggregates_follow_the_books(surge: Surge) -> None:
    processor = simulated_processor(surge)
    _, jane = await surge.donate(donation(5_000))
    _, ann = await surge.donate(donation(8_000, first_name="Ann"))
    response = await surge.client.post(
        f"/v1/donations/{ann['id']}/refunds",
        json={"amount": 3_000},
        headers={**surge.auth(Role.FINANCE), "Idempotency-Key": "refund-ann"},
    )
    assert response.status == 200
    opened = await processor.create_dispute(jane["processor_reference"])
    await post_webhook(surge, opened.payload, opened.headers)

    status, body = await get(surge, "/v1/reports/campaign-days?campaign=demo")
    [today] = body["data"]
    fees = jane["fee"] + ann["fee"] + 1_500
    assert today["day"] == datetime.now(UTC).date().isoformat()
    assert (today["donations"], today["gross"], today["refunds"], today["disputes"], today["fees"]) == (
        2,
        13_000,
        3_000,
        5_000,
        fees,
    )
    assert today["net"] == 13_000 - 3_000 - 5_000 - fees
    assert body["totals"]["demo"]["USD"]["net"] == today["net"]
    status, text = await get(surge, "/v1/reports/campaign-days?format=csv")
    assert f"demo,{today['day']},USD,2,130.00,30.00,50.00," in text

    status, body = await get(surge, "/v1/reports/donor-aggregates?campaign=demo&limit=6000&threshold=4000")
    rows = {r["first_name"]: r for r in body["data"]}
    assert (rows["Ann"]["aggregate"], rows["Ann"]["remaining"], rows["Ann"]["contributions"]) == (5_000, 1_000, 1)
    assert (rows["Jane"]["aggregate"], rows["Jane"]["itemized"], rows["Jane"]["over_limit"]) == (5_000, True, False)
    status, body = await get(surge, "/v1/reports/donor-aggregates?election=2026-general")
    assert {r["limit"] for r in body["data"]} == {350_000}

    status, body = await get(surge, "/v1/reports/trial-balance")
    assert body["totals"]["USD"]["balanced"] is True
    accounts = {r["account"]: r for r in body["data"]}
    assert accounts["contributions:demo"]["credit"] == 13_000
    # Fees 2.2 % + 30 cents: $1.40 (Jane) + $2.06 (Ann) + the $15.00 dispute fee; clearing keeps
    # 130.00 - 30.00 refunded - 50.00 disputed - 18.46 fees.
    assert (jane["fee"], ann["fee"]) == (140, 206)
    status, text = await get(surge, "/v1/reports/trial-balance?format=csv")
    assert text == (
        "account,type,currency,debit,credit\r\n"
        "bank:simulated:USD,asset,USD,0.00,0.00\r\n"
        "clearing:simulated:USD,asset,USD,31.54,0.00\r\n"
        "contributions:demo,revenue,USD,0.00,130.00\r\n"
        "disputes:demo,revenue,USD,50.00,0.00\r\n"
        "fees:simulated:USD,expense,USD,18.46,0.00\r\n"
        "refunds:demo,revenue,USD,30.00,0.00\r\n"
    )
    status, body = await get(surge, "/v1/reports/trial-balance?as_of=2020-01-01T00:00:00Z")
    assert status == 200
    assert all(r["debit"] == r["credit"] == 0 for r in body["data"])
