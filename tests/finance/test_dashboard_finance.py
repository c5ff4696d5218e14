"""Finance works in the dashboard: runs a reconciliation, resolves a planted exception with its proposed entry and a
memo, and exports reports as CSV identical to the API's — every form carrying the session's CSRF token (issue 15)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from adapters.base import ChargeRequest, ChargeStatus
from engine.keys import Role
from ledger.money import Money
from tests.finance.conftest import Surge, donation, donor, insert_donation, simulated_processor
from tests.finance.test_dashboard_donations import page, sign_in


async def plant_missing_charge(surge: Surge) -> str:
    """A charge the processor made whose ledger entry never got posted."""
    orphan = await insert_donation(
        surge.pool, amount=10_000, settled_at=datetime.now(UTC), person=donor("Olive", "Orphan")
    )
    charged = await simulated_processor(surge).charge(
        ChargeRequest(f"surge-{orphan}", orphan, Money(10_000, "USD"), "pm_card_visa", "demo")
    )
    assert charged.status is ChargeStatus.SUCCEEDED
    return orphan


async def test_run_a_reconciliation_and_resolve_its_exception_from_the_dashboard(surge: Surge) -> None:
    assert (await surge.donate(donation(2_500)))[0] == 201
    orphan = await plant_missing_charge(surge)
    cookie = await sign_in(surge)
    listing = await page(surge, "/dashboard/reconciliations", cookie)
    csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', listing)
    assert csrf is not None
    today = datetime.now(UTC).date().isoformat()
    form = {"processor": "simulated", "from": today, "to": today}

    forged = await surge.client.post("/dashboard/reconciliations", data=form, headers=cookie, allow_redirects=False)
    assert forged.status == 403
    assert await surge.pool.fetchval("SELECT count(*) FROM finance.reconciliation_runs") == 0
    ran = await surge.client.post(
        "/dashboard/reconciliations", data={**form, "csrf": csrf[1]}, headers=cookie, allow_redirects=False
    )
    assert ran.status == 303, await ran.text()
    run_page = await page(surge, ran.headers["Location"], cookie)
    assert f"charge:{orphan}" in run_page and "missing_in_ledger" in run_page
    exception_id = int(re.search(r'action="/dashboard/exceptions/(\d+)/resolve"', run_page)[1])  # type: ignore[index]

    url = f"/dashboard/exceptions/{exception_id}/resolve"
    done = await surge.client.post(
        url, data={"memo": "booked from the processor's record", "csrf": csrf[1]}, headers=cookie, allow_redirects=False
    )
    assert done.status == 303 and "resolved+with+entry" in done.headers["Location"]
    again = await surge.client.post(url, data={"memo": "twice", "csrf": csrf[1]}, headers=cookie, allow_redirects=False)
    assert "not+resolved" in again.headers["Location"]  # resolved once
    audit = await surge.pool.fetch("SELECT action, subject FROM surge.audit_events ORDER BY id")
    assert [(a["action"], a["subject"]) for a in audit][-2:] == [
        ("reconciliation_run", ran.headers["Location"].replace("/dashboard/reconciliations/", "reconciliation:")),
        ("exception_resolved", f"exception:{exception_id}"),
    ]
    assert "None open." in await page(surge, "/dashboard/reconciliations", cookie)

    bad = await surge.client.post(
        "/dashboard/reconciliations",
        data={**form, "from": "yesterday", "csrf": csrf[1]},
        headers=cookie,
        allow_redirects=False,
    )
    assert bad.status == 303 and "Not+run" in bad.headers["Location"]


async def test_reports_download_as_the_api_serves_them(surge: Surge) -> None:
    for name in ("Ada", "Grace"):
        assert (await surge.donate(donation(30_000, first_name=name, last_name="Big")))[0] == 201
    cookie = await sign_in(surge)
    assert 'id="export-form"' in await page(surge, "/dashboard/reports", cookie)
    today = datetime.now(UTC).date().isoformat()
    query = {"campaign": "demo", "from": today, "to": today}
    for name in ("schedule-a", "campaign-days", "donor-aggregates", "trial-balance"):
        download = await surge.client.get("/dashboard/reports/export", params={"report": name, **query}, headers=cookie)
        assert download.status == 200 and download.content_type == "text/csv"
        assert download.headers["Content-Disposition"] == f'attachment; filename="{name}-demo-{today}-{today}.csv"'
        api_query = {**query, "format": "csv"} if name != "trial-balance" else {"format": "csv"}
        api = await surge.client.get(f"/v1/reports/{name}", params=api_query, headers=surge.auth(Role.FINANCE))
        assert await download.text() == await api.text(), name
    schedule = await (
        await surge.client.get("/dashboard/reports/export", params={"report": "schedule-a", **query}, headers=cookie)
    ).text()
    assert schedule.count("Big") == 2
    missing = await surge.client.get("/dashboard/reports/export", params={"report": "nope"}, headers=cookie)
    assert missing.status == 404
