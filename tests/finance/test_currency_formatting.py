"""Money outside two-decimal currencies, through the reports' JSON and CSV and the dashboard's HTML.

ISO 4217 gives BHD and KWD three decimals (fils), JPY and ISK none, MGA two (Stripe's zero-decimal treatment of
MGA is the Stripe adapter's business, never the books'). JSON carries integer minor units with the row's
currency; CSV and HTML place the decimals by that currency; the dashboard never adds amounts across currencies.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from typing import Any

import pytest

from engine import chart_of_accounts
from engine.api import dashboard_html
from engine.api.dashboard import COOKIE_NAME
from engine.campaigns import Campaign, create_campaign
from engine.finance.reconcile.history import ExceptionView
from engine.finance.reconcile.model import ExceptionKind
from engine.finance.reconcile.rendering import exceptions_report
from engine.finance.reports.report import Report
from engine.keys import Role
from ledger.accounts import AccountDirectory
from ledger.entries import EntryRequest, transfer
from ledger.money import Money
from ledger.posting import post_entries
from tests.finance.conftest import Surge, donor, insert_donation
from tests.finance.test_dashboard import sign_in

GROSS = 12_345
FEE = 1_005
# Currency → (gross, fee, net) as the books' people read them.
EXPECTED = {
    "BHD": ("12.345", "1.005", "11.340"),
    "KWD": ("12.345", "1.005", "11.340"),
    "JPY": ("12345", "1005", "11340"),
    "MGA": ("123.45", "10.05", "113.40"),
    "ISK": ("12345", "1005", "11340"),
}


def slug(currency: str) -> str:
    return f"c-{currency.lower()}"


def booked(currency: str) -> list[EntryRequest]:
    """One donation to the currency's campaign and its processing fee, as the engine posts them."""
    donation = f"don_{currency.lower()}"
    return [
        transfer(
            donation,
            debit=chart_of_accounts.clearing("simulated", currency),
            credit=chart_of_accounts.contributions(slug(currency)),
            money=Money(GROSS, currency),
            metadata={"donation": donation, "campaign": slug(currency)},
        ),
        transfer(
            f"fee:{donation}",
            debit=chart_of_accounts.fees("simulated", currency),
            credit=chart_of_accounts.clearing("simulated", currency),
            money=Money(FEE, currency),
            metadata={"donation": donation, "campaign": slug(currency)},
        ),
    ]


async def book_every_currency(surge: Surge) -> None:
    async with surge.pool.acquire() as connection:
        for currency in EXPECTED:
            await create_campaign(connection, Campaign(slug(currency), currency, currency, "2026-general"))
            await chart_of_accounts.ensure_processor_accounts(connection, "simulated", currency)
        async with connection.transaction():
            results = await post_entries(
                connection, AccountDirectory(), [e for currency in EXPECTED for e in booked(currency)]
            )
    assert all(r.outcome.ok for r in results), results


async def get(surge: Surge, path: str) -> Any:
    response = await surge.client.get(path, headers=surge.auth(Role.FINANCE))
    assert response.status == 200, await response.text()
    return await (response.text() if response.content_type == "text/csv" else response.json())


async def test_campaign_days_in_json_and_csv_use_each_currency_s_decimals(surge: Surge) -> None:
    await book_every_currency(surge)
    body = await get(surge, "/v1/reports/campaign-days")
    by_currency = {row["currency"]: row for row in body["data"]}
    for currency in EXPECTED:
        row = by_currency[currency]
        assert (row["campaign"], row["gross"], row["fees"], row["net"]) == (slug(currency), GROSS, FEE, GROSS - FEE)
        assert body["totals"][slug(currency)] == {
            currency: {"donations": 1, "gross": GROSS, "refunds": 0, "disputes": 0, "fees": FEE, "net": GROSS - FEE}
        }
    rows = list(csv.DictReader(io.StringIO(await get(surge, "/v1/reports/campaign-days?format=csv"))))
    found = {r["currency"]: (r["gross"], r["fees"], r["net"]) for r in rows}
    assert found == EXPECTED


async def test_the_trial_balance_csv_formats_each_account_in_its_currency(surge: Surge) -> None:
    await book_every_currency(surge)
    body = await get(surge, "/v1/reports/trial-balance")
    for currency in EXPECTED:
        assert body["totals"][currency] == {"debit": GROSS, "credit": GROSS, "balanced": True}
    rows = list(csv.DictReader(io.StringIO(await get(surge, "/v1/reports/trial-balance?format=csv"))))
    by_account = {r["account"]: r for r in rows}
    for currency, (gross, fee, net) in EXPECTED.items():
        clearing = by_account[f"clearing:simulated:{currency}"]
        assert (clearing["currency"], clearing["debit"]) == (currency, net)
        assert by_account[f"fees:simulated:{currency}"]["debit"] == fee
        contributions = by_account[f"contributions:{slug(currency)}"]
        assert (contributions["currency"], contributions["credit"]) == (currency, gross)


async def test_schedule_a_csv_carries_each_receipt_s_currency(surge: Surge) -> None:
    async with surge.pool.acquire() as connection:
        for currency in EXPECTED:
            await create_campaign(connection, Campaign(slug(currency), currency, currency, "2026-general"))
    settled = datetime(2026, 2, 5, 12, tzinfo=UTC)
    for currency in EXPECTED:
        await insert_donation(
            surge.pool,
            donation_id=f"don_{currency.lower()}",
            amount=GROSS,
            settled_at=settled,
            person=donor("Ama", currency.title()),
            campaign=slug(currency),
            currency=currency,
            refunded=FEE,
        )
    body = await get(surge, "/v1/reports/schedule-a?threshold=0")
    assert {(r["currency"], r["contribution_amount"]) for r in body["data"]} == {(c, GROSS) for c in EXPECTED}
    rows = list(csv.DictReader(io.StringIO(await get(surge, "/v1/reports/schedule-a?threshold=0&format=csv"))))
    found = {r["currency"]: (r["contribution_amount"], r["contribution_aggregate"], r["memo"]) for r in rows}
    assert found == {currency: (gross, net, f"refunded {fee}") for currency, (gross, fee, net) in EXPECTED.items()}
    assert all(r["contribution_date"] == date(2026, 2, 5).isoformat() for r in rows)


async def test_the_dashboard_shows_each_currency_apart_never_a_sum(surge: Surge) -> None:
    await book_every_currency(surge)
    status, cookie = await sign_in(surge, surge.keys[Role.FINANCE])
    assert status == 303 and cookie is not None
    token = cookie.split(";", 1)[0].split("=", 1)[1]
    response = await surge.client.get("/dashboard", headers={"Cookie": f"{COOKIE_NAME}={token}"})
    assert response.status == 200
    html = await response.text()
    totals = html[html.index('id="campaign-totals"') : html.index('id="activity"')]
    chart = html[html.index('id="activity"') : html.index('id="trial-balance"')]
    for currency, (gross, _, net) in EXPECTED.items():
        assert f"{gross} {currency}" in totals and f"{net} {currency}" in totals
        # One figure per currency under the chart, in that currency's decimals.
        assert (
            f'<li data-currency="{currency}">{currency}: 1 donation, <strong>{gross} {currency}</strong></li>' in chart
        )
        assert f"{gross} {currency}" in chart
    # No amount in the chart is labelled or summed as dollars: 5 x 12345 minor units would be "617.25".
    assert "USD" not in chart and "617.25" not in chart and "61725" not in chart


def exception_in(currency: str | None, processor_amount: int | None, ledger_amount: int | None) -> ExceptionView:
    moment = datetime(2026, 3, 1, 12, tzinfo=UTC)
    proposed = [
        {"account": f"clearing:simulated:{currency}", "amount": GROSS, "currency": currency},
        {"account": "contributions:c-bhd", "amount": -GROSS, "currency": currency},
    ]
    return ExceptionView(
        7,
        "simulated",
        ExceptionKind.MISSING_IN_LEDGER if currency else ExceptionKind.CURRENCY_MISMATCH,
        "charge:don_1",
        currency,
        processor_amount,
        ledger_amount,
        moment,
        {"proposed_adjustment": proposed if currency else None, "note": ""},
        1,
        1,
        None,
        None,
    )


def test_reconciliation_exceptions_csv_in_three_decimals() -> None:
    report = exceptions_report([exception_in("BHD", GROSS, None), exception_in(None, None, None)])
    rows = list(csv.DictReader(io.StringIO(report.as_csv())))
    assert (rows[0]["currency"], rows[0]["processor_amount"], rows[0]["difference"]) == ("BHD", "12.345", "12.345")
    assert rows[0]["proposed_adjustment"] == "clearing:simulated:BHD 12.345 BHD; contributions:c-bhd -12.345 BHD"
    assert (rows[1]["currency"], rows[1]["processor_amount"]) == ("", "")


def test_an_amount_without_a_currency_is_never_shown_as_dollars() -> None:
    # A report row of money without its currency is a bug, not a row in USD.
    report = Report("broken", ("amount",), [{"amount": 1_234}], frozenset({"amount"}))
    with pytest.raises(ValueError, match="no currency"):
        report.as_csv()
    assert "12.34" not in dashboard_html.money(1_234, None)
    assert dashboard_html.money(1_234, "KWD") == "1.234 KWD"
