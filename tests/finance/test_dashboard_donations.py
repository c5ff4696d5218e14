"""Finance finds a donation, reads everything about it and refunds it from the dashboard: search by what people
type, keyset pages, indexes behind every search, a refund with a confirmation step, CSRF and idempotency (issue 15)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from engine.api.dashboard import COOKIE_NAME
from engine.finance.search import DonationSearch, _text_filter, search_donations
from engine.keys import Role
from ledger.currencies import parse_major
from tests.finance.conftest import Surge, donation


async def sign_in(surge: Surge, role: Role = Role.FINANCE) -> dict[str, str]:
    response = await surge.client.post("/dashboard/login", data={"key": surge.keys[role]}, allow_redirects=False)
    assert response.status == 303
    token = response.cookies[COOKIE_NAME].value
    surge.client.session.cookie_jar.clear()
    return {"Cookie": f"{COOKIE_NAME}={token}"}


async def page(surge: Surge, path: str, cookie: dict[str, str], **query: str) -> str:
    response = await surge.client.get(path, params=query, headers=cookie, allow_redirects=False)
    assert response.status == 200, (response.status, await response.text())
    return await response.text()


async def given(surge: Surge) -> dict[str, dict[str, Any]]:
    people = {
        "ada": donation(1_500, first_name="Ada", last_name="Lovelace", email="Ada@Example.org", postal_code="10001"),
        "grace": donation(2_500, first_name="Grace", last_name="Hopper", email="grace@navy.mil", postal_code="20002"),
        "alan": donation(4_200, first_name="Alan", last_name="Love", email="alan@example.org", postal_code="10002"),
    }
    made = {}
    for name, body in people.items():
        status, gift = await surge.donate(body)
        assert status == 201, gift
        made[name] = gift
    return made


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("ada@example.org", ["ada"]),  # email, whatever its case
        ("love", ["alan", "ada"]),  # last-name prefix, newest first
        ("ada love", ["ada"]),  # first and last
        ("1000", ["alan", "ada"]),  # postal code prefix
        ("20002", ["grace"]),
        ("nobody", []),
    ],
)
async def test_search_reads_what_people_type(surge: Surge, typed: str, expected: list[str]) -> None:
    made = await given(surge)
    found = await search_donations(surge.pool, DonationSearch(text=typed))
    assert [d.id for d in found.donations] == [made[name]["id"] for name in expected]


async def test_search_by_id_reference_amount_and_dates_with_keyset_pages(surge: Surge) -> None:
    made = await given(surge)
    by_id = await search_donations(surge.pool, DonationSearch(text=made["grace"]["id"]))
    assert [d.id for d in by_id.donations] == [made["grace"]["id"]]
    reference = by_id.donations[0].processor_reference
    assert reference and [
        d.id for d in (await search_donations(surge.pool, DonationSearch(text=reference))).donations
    ] == [made["grace"]["id"]]
    by_amount = await search_donations(surge.pool, DonationSearch(amount_minor=4_200, campaign="demo"))
    assert [d.id for d in by_amount.donations] == [made["alan"]["id"]]
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    assert (await search_donations(surge.pool, DonationSearch(created_from=tomorrow))).donations == []

    first = await search_donations(surge.pool, DonationSearch(), limit=2)
    second = await search_donations(surge.pool, DonationSearch(), limit=2, after=first.next_after)
    assert first.next_after is not None and second.next_after is None
    assert [d.id for d in first.donations + second.donations] == [made[n]["id"] for n in ("alan", "grace", "ada")]


@pytest.mark.parametrize(
    ("text", "index"),
    [
        ("ada@example.org", "donations_email"),
        ("love", "donations_last_name"),
        ("1000", "donations_postal_code"),
        (None, "donations_created"),
    ],
)
async def test_every_search_reads_an_index_on_a_large_table(surge: Surge, text: str | None, index: str) -> None:
    """50,000 donations with varied donors, analyzed: each search's plan reads its index and never the table."""
    await given(surge)
    await surge.pool.execute(
        """INSERT INTO surge.donations (id, api_key_id, idempotency_key, request_fingerprint, campaign, election,
                                        donor_key, amount_minor, currency, payment_method, donor, status, created_at)
           SELECT 'don_fill_' || n, d.api_key_id, 'fill-' || n, d.request_fingerprint, d.campaign, d.election,
                  'donor-' || n, 1000 + n % 5000, d.currency, d.payment_method,
                  jsonb_build_object('email', 'donor' || n || '@example.org', 'last_name', 'name' || n,
                                     'first_name', 'first' || n, 'postal_code', lpad((n % 99999)::text, 5, '0')),
                  'succeeded', now() - make_interval(secs => n)
             FROM generate_series(1, 50000) n, (SELECT * FROM surge.donations LIMIT 1) d"""
    )
    # Statistics from every row, not a sample: a sampled prefix estimate (5 rows one run, 505 the next) flips the
    # plan between the prefix's index and the newest-first walk, and this test is about the plan, not the sample.
    async with surge.pool.acquire() as connection:
        await connection.execute(
            "SET default_statistics_target = 1000; ANALYZE surge.donations; RESET default_statistics_target"
        )
    condition, values = _text_filter(text) if text else ("true", [])
    condition = condition.format(*(f"${i + 1}" for i in range(len(values))))
    rows = await surge.pool.fetch(
        f"EXPLAIN SELECT id FROM surge.donations WHERE {condition} ORDER BY created_at DESC, id DESC LIMIT 51",
        *values,
    )
    plan = "\n".join(row[0] for row in rows)
    assert index in plan and "Seq Scan" not in plan, plan


async def test_the_dashboard_finds_a_donation_and_shows_its_record(surge: Surge) -> None:
    made = await given(surge)
    cookie = await sign_in(surge)
    found = await page(surge, "/dashboard/donations", cookie, q="love")
    assert found.index(made["alan"]["id"]) < found.index(made["ada"]["id"]) and made["grace"]["id"] not in found
    assert "amount must be" in await page(surge, "/dashboard/donations", cookie, amount="ten dollars")
    record = await page(surge, f"/dashboard/donations/{made['ada']['id']}", cookie)
    assert 'id="donation-history"' in record and "received" in record and "succeeded" in record
    assert made["ada"]["id"] in record and "contributions:demo" in record and "15.00 USD" in record
    receipts = record[record.index('id="donation-receipts"') :]
    assert "ada@example.org" in receipts.lower() and "donation" in receipts  # written with the settlement
    told = record[record.index('id="processor-record"') :]
    assert told.index("succeeded") < told.index("amount 15.00 USD") < told.index("</section>")  # asked just now
    assert (await surge.client.get("/dashboard/donations", allow_redirects=False)).status == 303
    missing = await surge.client.get("/dashboard/donations/don_missing", headers=cookie)
    assert missing.status == 404


async def test_a_refund_from_the_dashboard_is_confirmed_made_once_and_audited(surge: Surge) -> None:
    made = await given(surge)
    gift = made["grace"]
    cookie = await sign_in(surge)
    detail = await page(surge, f"/dashboard/donations/{gift['id']}", cookie)
    csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', detail)
    assert csrf is not None
    url = f"/dashboard/donations/{gift['id']}/refund"

    forged = await surge.client.post(url, data={"amount": "10.00"}, headers=cookie, allow_redirects=False)
    assert forged.status == 403  # no CSRF token: nothing refunded
    confirm = await surge.client.post(url, data={"amount": "10", "csrf": csrf[1]}, headers=cookie)
    confirmation = await confirm.text()
    assert confirm.status == 200 and "10.00 USD" in confirmation and 'id="confirm-refund"' in confirmation
    assert await surge.pool.fetchval("SELECT count(*) FROM surge.refunds") == 0  # not before it is confirmed
    fields = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">', confirmation))
    for _ in range(2):  # a double click: one refund
        done = await surge.client.post(url, data=fields, headers=cookie, allow_redirects=False)
        assert done.status == 303 and "succeeded" in done.headers["Location"]
    refunds = await surge.pool.fetch(
        "SELECT amount_minor, status FROM surge.refunds WHERE donation_id = $1", gift["id"]
    )
    assert [(r["amount_minor"], r["status"]) for r in refunds] == [(1_000, "succeeded")]
    finance_key = await surge.pool.fetchval("SELECT id FROM surge.api_keys WHERE role = 'finance'")
    action = await surge.pool.fetchrow(
        "SELECT actor, subject FROM surge.audit_events WHERE action = 'refund_requested'"
    )
    assert (action["actor"], action["subject"]) == (f"key:{finance_key}", gift["id"])

    too_much = await surge.client.post(
        url, data={**fields, "amount": "99.00", "idempotency_key": "other"}, headers=cookie, allow_redirects=False
    )
    assert too_much.status == 303 and "refused" in too_much.headers["Location"]


@pytest.mark.parametrize(
    ("typed", "currency", "minor"),
    [
        ("25", "USD", 2500),
        ("25.5", "USD", 2550),
        ("1,000.05", "USD", 100005),
        ("500", "JPY", 500),
        ("1.234", "BHD", 1234),
    ],
)
def test_typed_amounts_become_exact_minor_units(typed: str, currency: str, minor: int) -> None:
    assert parse_major(typed, currency) == minor


@pytest.mark.parametrize("typed", ["", "-5", "1.234", "1e3", "ten", "5.", "0x10"])
def test_amounts_that_are_not_amounts_are_refused(typed: str) -> None:
    with pytest.raises(ValueError):
        parse_major(typed, "USD")


async def test_a_refcode_is_searched_and_shown(surge: Surge) -> None:
    await given(surge)
    status, tagged = await surge.donate({**donation(1_800, last_name="Ref"), "refcode": "email-nov"})
    assert status == 201
    found = await search_donations(surge.pool, DonationSearch(refcode="email-nov"))
    assert [d.id for d in found.donations] == [tagged["id"]]
    read = await surge.client.get(f"/v1/donations/{tagged['id']}", headers=surge.auth(Role.FINANCE))
    assert (await read.json())["refcode"] == "email-nov"
    cookie = await sign_in(surge)
    listing = await page(surge, "/dashboard/donations", cookie, refcode="email-nov")
    assert tagged["id"] in listing and listing.count("/dashboard/donations/don_") == 1
    assert "refcode email-nov" in await page(surge, f"/dashboard/donations/{tagged['id']}", cookie)
