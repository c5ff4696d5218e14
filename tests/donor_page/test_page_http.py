"""The donation page over plain HTTP: what it renders (presets, notices, attestations, prefill, escaping), its
headers (a strict CSP, no caching), the simulated tokenizer, the refcode from the page to the reports, and the
campaign's challenge rule (always / auto) for the page and for direct API posts alike."""

from __future__ import annotations

import re
from typing import Any

from engine.keys import Role
from engine.pipeline.challenge import TEST_TOKEN_PREFIX
from tests.donor_page.conftest import Surge, create_campaign, form_data
from tests.e2e.conftest import donation
from tests.waiting import wait_until


async def get_page(surge: Surge, path: str) -> tuple[int, str, Any]:
    response = await surge.client.get(path)
    return response.status, await response.text(), response.headers


async def page_status(surge: Surge, path: str) -> bool:
    return (await surge.client.get(path)).status == 200


async def test_the_page_renders_presets_notices_and_attestations_under_a_strict_csp(page_surge: Surge) -> None:
    surge = page_surge
    await create_campaign(surge, "smith", presets=[1_500, 5_000, 100_000], intro="Help Smith win.")
    status, html, headers = await get_page(surge, "/donate/smith")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    labels = re.findall(r'<label for="preset-\d">([^<]*)</label>', html)
    assert labels == ["$15", "$50", "$1000"]
    assert "Help Smith win." in html
    assert "not tax deductible" in html and 'id="tax-notice"' in html
    assert "best efforts" in html
    assert len(re.findall(r'class="attestation"', html)) == 5
    assert 'id="employer-fields" hidden' in html  # asked once the amount passes the itemization threshold
    data = form_data(html)
    assert data["itemization-threshold"] == "20000" and data["tokenizer"] == "simulated"
    assert data["form-key"].startswith("pk_") and data["idempotency-key"].startswith("page_")

    csp = dict(part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";"))
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == "'self'"  # no inline script, no other origin (no Stripe, no widget here)
    assert csp["frame-ancestors"] == "'self'"  # no allowed origins: only Surge itself may frame it
    assert headers["Cache-Control"] == "no-store"
    assert "<script>" not in html and " on" not in re.sub(r'"[^"]*"', "", html).lower().replace(" one", "")

    # Each render carries its own idempotency key; the page key stays the campaign's.
    again = form_data((await get_page(surge, "/donate/smith"))[1])
    assert again["idempotency-key"] != data["idempotency-key"] and again["form-key"] == data["form-key"]

    # Its script and stylesheet come from Surge; nothing else is served from the folder.
    script = await surge.client.get("/donate/static/donate.js")
    assert script.status == 200 and script.headers["Content-Type"].startswith("text/javascript")
    assert "createPaymentMethod" in await script.text()
    assert (await surge.client.get("/donate/static/render.py")).status == 404
    assert (await surge.client.get("/donate/static/..%2Frender.py")).status == 404
    assert (await get_page(surge, "/donate/nobody"))[0] == 404


async def test_a_nonprofit_page_has_no_tax_notice_and_embedding_follows_allowed_origins(page_surge: Surge) -> None:
    surge = page_surge
    body = {
        "slug": "shelter",
        "name": "Shelter",
        "election": "2026",
        "require_attestation": False,
        "allowed_origins": ["https://shelter.example", "https://x.example; script-src *"],
        "page": {"kind": "nonprofit", "attestations": [], "stripe_publishable_key": "pk_test_abc123"},
    }
    assert (await surge.client.post("/v1/campaigns", json=body, headers=surge.auth(Role.ADMIN))).status == 201
    status, html, headers = await get_page(surge, "/donate/shelter")
    assert status == 200
    assert 'id="tax-notice"' not in html and 'class="attestation"' not in html
    assert form_data(html)["tokenizer"] == "stripe" and form_data(html)["stripe-key"] == "pk_test_abc123"
    assert '<script src="https://js.stripe.com/v3/"></script>' in html
    csp = dict(part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";"))
    assert csp["script-src"] == "'self' https://js.stripe.com"
    assert "https://api.stripe.com" in csp["connect-src"]
    # The malformed origin cannot smuggle a directive into the header.
    assert csp["frame-ancestors"] == "'self' https://shelter.example"
    assert "script-src *" not in headers["Content-Security-Policy"]


async def test_prefill_and_settings_are_written_as_text(page_surge: Surge) -> None:
    surge = page_surge
    await create_campaign(surge, "esc", heading="<script>alert('h')</script>", attestations=['I am "<b>" human'])
    evil = '"><script>alert(1)</script>'
    query = {"first_name": evil, "email": "a@b.example", "refcode": "spring-email_1", "amount": "37.5", "zip": "x"}
    response = await surge.client.get("/donate/esc", params=query)
    html = await response.text()
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#39;h&#39;)&lt;/script&gt;" in html
    assert 'value="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in html
    assert "I am &#34;&lt;b&gt;&#34; human" in html
    assert 'id="amount-other" inputmode="decimal" autocomplete="off" value="37.50"' in html
    assert form_data(html)["refcode"] == "spring-email_1"
    # A preset amount selects its button; a refcode outside the allowed characters is dropped.
    html = await (await surge.client.get("/donate/esc", params={"amount": "25", "refcode": "<x>"})).text()
    assert re.search(r'value="2500" checked>', html) and form_data(html)["refcode"] == ""


async def tokenize(surge: Surge, key: str | None, **card: str) -> tuple[int, dict[str, Any]]:
    form = {"type": "card", "card[exp_month]": "12", "card[exp_year]": "2030", "card[cvc]": "123"}
    form.update({f"card[{name}]": value for name, value in card.items()})
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = await surge.client.post("/simulated/v1/payment_methods", data=form, headers=headers)
    return response.status, await response.json()


async def test_the_simulated_tokenizer_maps_test_cards_and_refuses_the_rest(page_surge: Surge) -> None:
    surge = page_surge
    key = surge.keys[Role.FORM]
    assert await tokenize(surge, key, number="4242 4242 4242 4242") == (
        200,
        {"id": "pm_card_visa", "object": "payment_method", "type": "card"},
    )
    assert (await tokenize(surge, key, number="4000000000000002"))[1]["id"] == "pm_card_chargeDeclined"
    assert (await tokenize(surge, key, number="4000002500003155"))[1]["id"] == "pm_card_authenticationRequired"

    def refused(answer: tuple[int, dict[str, Any]]) -> tuple[int, str, str]:
        status, body = answer
        return status, body["error"]["code"], body["error"]["param"]

    assert refused(await tokenize(surge, key, number="4242424242424241")) == (402, "incorrect_number", "card[number]")
    assert refused(await tokenize(surge, key, number="abcd")) == (402, "incorrect_number", "card[number]")
    # A well-formed number that is not a test card (a real card, in test mode) is declined, never charged.
    assert refused(await tokenize(surge, key, number="4111111111111111")) == (402, "card_declined", "card[number]")
    assert refused(await tokenize(surge, key, number="4242424242424242", exp_year="2001"))[1] == "invalid_expiry_year"
    assert refused(await tokenize(surge, key, number="4242424242424242", exp_month="13"))[1] == "invalid_expiry_month"
    assert refused(await tokenize(surge, key, number="4242424242424242", cvc="1"))[1] == "invalid_cvc"
    assert (await tokenize(surge, None, number="4242424242424242"))[0] == 401
    assert (await tokenize(surge, surge.keys[Role.FORM], number=""))[0] == 400
    # The donations API still refuses a card number in place of a token.
    status, body = await surge.donate(donation(payment_method="4242424242424242"))
    assert status == 400 and body["error"]["param"] == "payment_method"
    # Nothing of the numbers was kept anywhere in the engine's tables.
    assert await surge.pool.fetchval("SELECT count(*) FROM surge.donations WHERE payment_method ~ '[0-9]{12}'") == 0


async def test_the_page_key_posts_donations_with_their_refcode_and_reports_count_them(page_surge: Surge) -> None:
    surge = page_surge
    html = await (await surge.client.get("/donate/demo?refcode=fb-ad")).text()
    page = form_data(html)
    headers = {"Authorization": f"Bearer {page['form-key']}", "Idempotency-Key": page["idempotency-key"]}
    body = {**donation(2_500), "refcode": page["refcode"]}
    first = await surge.client.post("/v1/donations", json=body, headers=headers)
    replay = await surge.client.post("/v1/donations", json=body, headers=headers)  # a double click: one gift
    assert first.status == 201 and replay.status == 201
    assert (await first.json())["id"] == (await replay.json())["id"]
    for n, (code, card) in enumerate(
        [("fb-ad", "pm_card_visa"), ("fb-ad", "pm_card_chargeDeclined"), ("tw", "pm_card_visa")]
    ):
        status, _ = await surge.donate({**donation(1_000 * (n + 1), card, first_name=f"R{n}"), "refcode": code})
        assert status in (201, 402)
    assert (await surge.donate(donation(700, first_name="NoCode")))[0] == 201
    status, bad = await surge.donate({**donation(700), "refcode": "no spaces"})
    assert status == 400 and bad["error"]["param"] == "refcode"

    stored = await surge.pool.fetch("SELECT refcode, count(*) FROM surge.donations GROUP BY refcode ORDER BY refcode")
    assert [(r["refcode"], r["count"]) for r in stored] == [("fb-ad", 3), ("tw", 1), (None, 1)]

    response = await surge.client.get("/v1/reports/refcodes", headers=surge.auth(Role.FINANCE))
    report = await response.json()
    rows = {(r["campaign"], r["refcode"]): r for r in report["data"]}
    assert rows[("demo", "fb-ad")] | {} == {
        "campaign": "demo",
        "refcode": "fb-ad",
        "currency": "USD",
        "donations": 2,
        "gross": 3_500,
        "refunds": 0,
        "disputes": 0,
        "net": 3_500,
        "declined": 1,
    }
    assert rows[("demo", "tw")]["gross"] == 3_000 and len(rows) == 2
    csv = await (await surge.client.get("/v1/reports/refcodes?format=csv", headers=surge.auth(Role.FINANCE))).text()
    assert csv.splitlines()[0] == "campaign,refcode,currency,donations,gross,refunds,disputes,net,declined"
    assert "demo,fb-ad,USD,2,35.00,0.00,0.00,35.00,1" in csv.splitlines()
    # The finance dashboard shows the same table.
    signed_in = await surge.client.post("/dashboard/login", data={"key": surge.keys[Role.FINANCE]})
    dashboard = await signed_in.text()
    refcodes = dashboard[dashboard.index('id="refcodes"') :]
    refcodes = refcodes[: refcodes.index("</section>")]
    cells = re.findall(r"<td[^>]*>(?:<strong>)?([^<]*)", refcodes)
    assert cells[:7] == ["demo", "fb-ad", "2", "35.00 USD", "0.00 USD", "35.00 USD", "1"]


async def test_a_campaign_that_always_asks_for_the_challenge(page_surge: Surge) -> None:
    surge = page_surge
    await create_campaign(surge, "guarded", challenge="always")
    html = await (await surge.client.get("/donate/guarded")).text()
    assert form_data(html)["challenge-required"] == "true" and '<fieldset id="challenge" >' in html
    body = {**donation(1_000), "campaign": "guarded"}
    status, refused = await surge.donate(body, key="guarded-1")
    assert status == 428 and refused["error"]["code"] == "challenge_required"
    assert (await surge.donate({**body, "challenge": "a-bot-guess"}, key="guarded-1"))[0] == 428
    status, accepted = await surge.donate({**body, "challenge": TEST_TOKEN_PREFIX + "page"}, key="guarded-1")
    assert status == 201, accepted
    # A replay of the accepted request (a double click) is the same gift, not asked again.
    assert (await surge.donate({**body, "challenge": "spent-token"}, key="guarded-1"))[1]["id"] == accepted["id"]
    # "never" and the demo's default ("auto", quiet) ask nobody.
    await create_campaign(surge, "open", challenge="never")
    # The campaign directory reloads for an unknown slug at most once a second.
    await wait_until(lambda: page_status(surge, "/donate/open"), timeout=5, what="the new campaign's page")
    assert form_data(await (await surge.client.get("/donate/open")).text())["challenge-required"] == "false"
    assert (await surge.donate({**body, "campaign": "open"}))[0] == 201


async def test_auto_asks_for_the_challenge_while_the_campaigns_decline_ratio_is_high(page_surge: Surge) -> None:
    surge = page_surge
    await create_campaign(surge, "auto", challenge="auto", challenge_sample_min=4, challenge_decline_ratio=0.5)

    def gift(n: int, card: str) -> dict[str, Any]:
        return {**donation(1_000 + n, card, first_name=f"Auto{n}", postal_code=f"{20000 + n}"), "campaign": "auto"}

    assert (await surge.donate(gift(0, "pm_card_visa")))[0] == 201
    assert form_data(await (await surge.client.get("/donate/auto")).text())["challenge-required"] == "false"
    # Three declines out of four decided attempts: a card-testing run against the campaign (below velocity's
    # per-address minimum of five declines, so this is the campaign's rule at work).
    for n in range(1, 4):
        assert (await surge.donate(gift(n, "pm_card_chargeDeclined")))[0] == 402

    async def page_asks() -> bool:
        # The campaign's ratio is read again after a few seconds' cache; rendering the page adds no attempt.
        html = await (await surge.client.get("/donate/auto")).text()
        return form_data(html)["challenge-required"] == "true"

    await wait_until(page_asks, timeout=15, what="the campaign's auto challenge")
    # A direct API post meets the same rule (still below velocity's per-address minimum of five declines).
    status, refused = await surge.donate(gift(10, "pm_card_visa"), key="auto-probe")
    assert (status, refused["error"]["code"]) == (428, "challenge_required")
    status, _ = await surge.donate({**gift(10, "pm_card_visa"), "challenge": TEST_TOKEN_PREFIX + "x"}, key="auto-probe")
    assert status == 201
    # Another campaign is not affected.
    assert (await surge.donate(gift(11, "pm_card_visa") | {"campaign": "demo"}))[0] == 201
