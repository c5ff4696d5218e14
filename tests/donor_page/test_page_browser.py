"""The donation page in a real headless Chromium (Playwright, Debian's chromium): a donor fills the page and pays
with Stripe's test cards through the simulated tokenizer — success to the confirmation and into the ledger; a
decline shown with the processor's message, then another card; a 202 shown as processing until the pending charge
is resolved; a double submit that is one gift. Screenshots at 1280 and 390 px wide are saved in
tests/donor_page/screenshots/ (ignored by git)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page

from tests.donor_page.conftest import Surge, create_campaign
from tests.finance.browser import launch_chromium
from tests.finance.conftest import simulated_processor
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

PAGE_TIMEOUT_MS = 30_000
SCREENSHOTS = Path(__file__).parent / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


async def open_page(
    browser: Browser, surge: Surge, path: str, viewport: dict[str, int], url: str | None = None
) -> Page:
    context = await browser.new_context(viewport=viewport)
    page = await context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    await page.goto(url or str(surge.client.make_url(path)))
    page.errors = errors  # type: ignore[attr-defined]  # read by the tests: no script error, no CSP violation
    return page


async def wait_for_outcome(page: Page) -> None:
    """Until the confirmation shows; an error shown instead fails at once with its text."""
    await page.wait_for_selector("#confirmation:not([hidden]), #form-error:not([hidden])")
    if await page.is_visible("#form-error"):
        raise AssertionError(f"the page says: {await page.text_content('#form-error')}")


async def fill_donor(page: Page, first_name: str = "Jane") -> None:
    values = {
        "first_name": first_name,
        "last_name": "Doe",
        "email": f"{first_name.lower()}@example.org",
        "address_line1": "1 Main St",
        "city": "Springfield",
        "state": "IL",
        "postal_code": "62701",
    }
    for field, value in values.items():
        await page.fill(f"#{field}", value)
    for box in await page.query_selector_all("input.attestation"):
        await box.check()


async def fill_card(page: Page, number: str) -> None:
    await page.fill("#card-number", number)
    await page.fill("#card-expiry", "12/30")
    await page.fill("#card-cvc", "123")


async def donations_of(surge: Surge, first_name: str) -> list[dict[str, Any]]:
    rows = await surge.pool.fetch(
        """SELECT id, status, amount_minor, refcode, payment_method, idempotency_key, failure_message
             FROM surge.donations WHERE donor->>'first_name' = $1 ORDER BY created_at""",
        first_name,
    )
    return [dict(row) for row in rows]


async def ledger_entries_of(surge: Surge, donation_id: str) -> int:
    """The donation's own ledger entries (its processor fee is booked as an entry of its own)."""
    count: int = await surge.pool.fetchval(
        "SELECT count(*) FROM ledger.entries WHERE metadata->>'donation' = $1 AND memo = 'donation'", donation_id
    )
    return count


async def test_a_donor_gives_and_finds_the_confirmation(page_surge: Surge, chromium: str) -> None:
    surge = page_surge
    SCREENSHOTS.mkdir(exist_ok=True)
    async with launch_chromium(chromium) as browser:
        page = await open_page(browser, surge, "/donate/demo?refcode=spring-email&first_name=Ada", DESKTOP)
        assert await page.input_value("#first_name") == "Ada"  # prefilled from the link
        assert await page.is_hidden("#employer-fields")
        await page.click("label[for=preset-2]")  # $25, by its button
        await fill_donor(page, "Ada")
        await fill_card(page, "4242 4242 4242 4242")
        await page.screenshot(path=str(SCREENSHOTS / "page-desktop-1280.png"), full_page=True)
        await page.click("#donate-button")
        await wait_for_outcome(page)
        assert await page.text_content("#confirmation-amount") == "25.00 USD"
        shown_id = await page.text_content("#confirmation-id")
        await page.screenshot(path=str(SCREENSHOTS / "confirmation-desktop-1280.png"), full_page=True)
        assert page.errors == []  # type: ignore[attr-defined]

    [gift] = await donations_of(surge, "Ada")
    assert gift["id"] == shown_id and gift["status"] == "succeeded" and gift["amount_minor"] == 2_500
    assert gift["refcode"] == "spring-email" and gift["payment_method"] == "pm_card_visa"
    assert await ledger_entries_of(surge, gift["id"]) == 1


async def test_at_phone_width_the_page_fits_and_asks_for_employer_past_the_threshold(
    page_surge: Surge, chromium: str
) -> None:
    surge = page_surge
    SCREENSHOTS.mkdir(exist_ok=True)
    async with launch_chromium(chromium) as browser:
        page = await open_page(browser, surge, "/donate/demo", PHONE)
        assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        await page.fill("#amount-other", "250")  # past the $200 itemization threshold
        await page.wait_for_selector("#employer-fields", state="visible")
        await fill_donor(page, "Phone")
        await fill_card(page, "4242424242424242")
        await page.screenshot(path=str(SCREENSHOTS / "page-phone-390.png"), full_page=True)
        # Submitted without employer: the page says so at the field, and moves the focus there.
        await page.click("#donate-button")
        await page.wait_for_selector("#form-error", state="visible")
        assert await page.text_content("#form-error") == "Employer is required."
        assert await page.evaluate("document.activeElement.id") == "employer"
        assert await page.get_attribute("#employer", "aria-invalid") == "true"
        await page.fill("#employer", "Acme")
        await page.fill("#occupation", "Engineer")
        await page.keyboard.press("Enter")  # from the keyboard
        await wait_for_outcome(page)
        await page.screenshot(path=str(SCREENSHOTS / "confirmation-phone-390.png"), full_page=True)
        assert page.errors == []  # type: ignore[attr-defined]
    [gift] = await donations_of(surge, "Phone")
    assert gift["status"] == "succeeded" and gift["amount_minor"] == 25_000


async def test_a_decline_shows_the_message_and_another_card_goes_through(page_surge: Surge, chromium: str) -> None:
    surge = page_surge
    async with launch_chromium(chromium) as browser:
        page = await open_page(browser, surge, "/donate/demo", DESKTOP)
        await page.click("label[for=preset-1]")
        await fill_donor(page, "Decline")
        await fill_card(page, "4000000000009995")  # insufficient funds
        await page.click("#donate-button")
        await page.wait_for_selector("#form-error", state="visible")
        assert await page.text_content("#form-error") == "Your card has insufficient funds."
        assert await page.get_attribute("#form-error", "role") == "alert"
        assert await page.input_value("#card-number") == ""  # ready for another card
        assert await page.is_enabled("#donate-button")
        await page.screenshot(path=str(SCREENSHOTS / "decline-desktop-1280.png"), full_page=True)
        await fill_card(page, "5555555555554444")
        await page.click("#donate-button")
        await wait_for_outcome(page)
        assert page.errors == [] or all("402" in e for e in page.errors)  # type: ignore[attr-defined]
    declined, succeeded = await donations_of(surge, "Decline")
    assert declined["status"] == "declined" and declined["failure_message"] == "Your card has insufficient funds."
    assert succeeded["status"] == "succeeded" and succeeded["payment_method"] == "pm_card_mastercard"
    assert declined["idempotency_key"] != succeeded["idempotency_key"]  # another card is another attempt
    assert await ledger_entries_of(surge, declined["id"]) == 0
    assert await ledger_entries_of(surge, succeeded["id"]) == 1


async def test_a_pending_charge_shows_processing_then_the_confirmation(page_surge: Surge, chromium: str) -> None:
    surge = page_surge
    async with launch_chromium(chromium) as browser:
        page = await open_page(browser, surge, "/donate/demo", DESKTOP)
        await page.click("label[for=preset-3]")
        await fill_donor(page, "Pending")
        await fill_card(page, "4000002500003155")  # requires authentication: the processor has not decided
        await page.click("#donate-button")
        await page.wait_for_selector("#processing", state="visible")
        assert await page.is_hidden("#donate-form")

        async def pending() -> dict[str, Any] | None:
            rows = await donations_of(surge, "Pending")
            return rows[0] if rows and rows[0]["status"] == "pending" else None

        gift = await wait_until(pending, timeout=30, what="the pending donation")
        reference = await surge.pool.fetchval(
            "SELECT processor_reference FROM surge.donations WHERE id = $1", gift["id"]
        )
        webhook = await simulated_processor(surge).resolve_pending(reference, succeeded=True)
        response = await surge.client.post("/v1/webhooks/simulated", data=webhook.payload, headers=webhook.headers)
        assert response.status == 200
        await wait_for_outcome(page)  # the page polled and saw it succeed
        assert await page.text_content("#confirmation-id") == gift["id"]
    [settled] = await donations_of(surge, "Pending")
    assert settled["status"] == "succeeded" and await ledger_entries_of(surge, settled["id"]) == 1


async def test_a_double_submit_is_one_gift(page_surge: Surge, chromium: str) -> None:
    surge = page_surge
    async with launch_chromium(chromium) as browser:
        page = await open_page(browser, surge, "/donate/demo", DESKTOP)
        await page.click("label[for=preset-1]")
        await fill_donor(page, "Twice")
        await fill_card(page, "4242424242424242")
        # Three submits in one go, before any answer: none but the first may become a gift.
        await page.evaluate(
            """() => {
                const button = document.getElementById('donate-button');
                button.click();
                button.click();
                document.getElementById('donate-form').requestSubmit();
            }"""
        )
        await wait_for_outcome(page)
    assert [d["status"] for d in await donations_of(surge, "Twice")] == ["succeeded"]


async def test_a_reload_during_an_attempt_is_the_same_gift(page_surge: Surge, chromium: str) -> None:
    surge = page_surge
    async with launch_chromium(chromium) as browser:
        page = await open_page(browser, surge, "/donate/demo?amount=30", DESKTOP)

        async def give() -> None:
            await fill_donor(page, "Reload")
            await fill_card(page, "4000002500003155")  # pending: the attempt stays open
            await page.click("#donate-button")
            await page.wait_for_selector("#processing", state="visible")

        await give()
        await page.reload()  # the donor reloads, fills the page again and gives again
        await give()
        rows = await donations_of(surge, "Reload")
        assert len(rows) == 1 and rows[0]["amount_minor"] == 3_000  # the second submit replayed the first


async def test_a_campaign_that_asks_for_the_challenge_in_the_browser(page_surge: Surge, chromium: str) -> None:
    surge = page_surge
    await create_campaign(surge, "guarded", challenge="always")
    await wait_until(lambda: page_served(surge, "/donate/guarded"), timeout=5, what="the new campaign's page")
    async with launch_chromium(chromium) as browser:
        page = await open_page(browser, surge, "/donate/guarded", PHONE)
        assert await page.is_visible("#challenge")
        await page.click("label[for=preset-1]")
        await fill_donor(page, "Human")
        await fill_card(page, "4242424242424242")
        await page.click("#donate-button")
        await page.wait_for_selector("#form-error", state="visible")
        assert await page.text_content("#form-error") == "Please complete the challenge to donate."
        assert await donations_of(surge, "Human") == []
        await page.check("#challenge-test")  # the test verifier's widget: tokens starting test_pass_ pass
        await page.click("#donate-button")
        await wait_for_outcome(page)
        await page.screenshot(path=str(SCREENSHOTS / "challenge-phone-390.png"), full_page=True)
    assert [d["status"] for d in await donations_of(surge, "Human")] == ["succeeded"]


async def page_served(surge: Surge, path: str) -> bool:
    return (await surge.client.get(path)).status == 200


async def test_embedded_in_an_allowed_site_the_frame_is_sized_and_takes_a_gift(
    page_surge: Surge, chromium: str
) -> None:
    """A campaign's own site (another origin) frames the page with the documented snippet; a site the campaign does
    not allow cannot frame it (CSP frame-ancestors)."""
    surge = page_surge
    surge_origin = str(surge.client.make_url("/")).rstrip("/")
    host = web.Application()
    site = TestServer(host, host="localhost")  # localhost vs 127.0.0.1: another origin than Surge's
    snippet = (
        '<iframe data-surge-donate src="{surge}/donate/{campaign}?refcode=site" title="Donate" '
        'style="width:100%;border:0;height:150px"></iframe>'
        '<script src="{surge}/donate/static/embed.js" async></script>'
    )

    async def campaign_site(request: web.Request) -> web.Response:
        campaign = request.match_info["campaign"]
        body = f"<!DOCTYPE html><h1>Our site</h1>{snippet.format(surge=surge_origin, campaign=campaign)}"
        return web.Response(text=body, content_type="text/html")

    host.router.add_get("/{campaign}", campaign_site)
    await site.start_server()
    try:
        site_origin = f"http://localhost:{site.port}"
        await create_campaign(surge, "framed", allowed_origins=[site_origin])
        await create_campaign(surge, "private")  # allows no origin but Surge's own
        await wait_until(lambda: page_served(surge, "/donate/private"), timeout=5, what="the new campaigns' pages")
        async with launch_chromium(chromium) as browser:
            page = await open_page(browser, surge, "", DESKTOP, url=f"{site_origin}/framed")
            await page.wait_for_function(
                "() => parseInt(document.querySelector('iframe').style.height) > 1000"  # sized by embed.js
            )
            frame = page.frame_locator("iframe[data-surge-donate]")
            await frame.locator("label[for=preset-2]").click()
            for field, value in {
                "first_name": "Framed",
                "last_name": "Doe",
                "email": "framed@example.org",
                "address_line1": "1 Main St",
                "city": "Springfield",
                "state": "IL",
                "postal_code": "62701",
                "card-number": "4242424242424242",
                "card-expiry": "12/30",
                "card-cvc": "123",
            }.items():
                await frame.locator(f"#{field}").fill(value)
            for index in range(1, 6):
                await frame.locator(f"#attestation-{index}").check()
            await frame.locator("#donate-button").click()
            await frame.locator("#confirmation").wait_for(state="visible")
            await page.wait_for_function(  # and shrunk to the confirmation
                "() => parseInt(document.querySelector('iframe').style.height) < 600"
            )
            await page.screenshot(path=str(SCREENSHOTS / "embedded-desktop-1280.png"), full_page=True)

            assert page.errors == []  # type: ignore[attr-defined]

            await page.goto(f"{site_origin}/private")

            async def refused() -> bool:
                return any(f.url.startswith("chrome-error://") for f in page.frames)

            await wait_until(refused, timeout=10, what="the browser refusing to frame the private campaign")
    finally:
        await site.close()
    [gift] = await donations_of(surge, "Framed")
    assert gift["status"] == "succeeded" and gift["refcode"] == "site"


# Stripe.js cannot be fetched here (no network): a stand-in at its documented interface (Stripe(key).elements({mode,
# amount, currency, paymentMethodCreation}), elements.create("payment").mount(), elements.submit(),
# stripe.createPaymentMethod({elements, params})) records how the page calls it, and answers with a test token.
STRIPE_STAND_IN = """
window.Stripe = function (key) {
  var calls = window.stripeCalls = { key: key, amounts: [] };
  return {
    elements: function (options) {
      calls.options = options;
      return {
        create: function (type) {
          calls.type = type;
          return {
            mount: function (selector) { calls.mounted = selector; },
            clear: function () {},
            focus: function () {}
          };
        },
        update: function (options) { calls.amounts.push(options.amount); },
        submit: function () { calls.submitted = true; return Promise.resolve({}); }
      };
    },
    createPaymentMethod: function (request) {
      calls.billing = request.params.billing_details;
      calls.withElements = Boolean(request.elements);
      return Promise.resolve({ paymentMethod: { id: "pm_card_visa" } });
    }
  };
};
"""


async def test_with_a_stripe_key_the_page_tokenizes_through_stripe_js(page_surge: Surge, chromium: str) -> None:
    surge = page_surge
    await create_campaign(surge, "striped", stripe_publishable_key="pk_test_page123")
    await wait_until(lambda: page_served(surge, "/donate/striped"), timeout=5, what="the new campaign's page")
    async with launch_chromium(chromium) as browser:
        context = await browser.new_context(viewport=DESKTOP)
        await context.route(
            "https://js.stripe.com/v3/",
            lambda route: route.fulfill(status=200, content_type="text/javascript", body=STRIPE_STAND_IN),
        )
        page = await context.new_page()
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        await page.goto(str(surge.client.make_url("/donate/striped")))
        assert await page.query_selector("#card-number") is None  # no card field of Surge's own
        await page.click("label[for=preset-3]")  # $50
        await fill_donor(page, "Striped")
        await page.click("#donate-button")
        await wait_for_outcome(page)
        calls = await page.evaluate("window.stripeCalls")
    assert calls["key"] == "pk_test_page123" and calls["type"] == "payment" and calls["mounted"] == "#payment-element"
    assert calls["options"]["mode"] == "payment" and calls["options"]["paymentMethodCreation"] == "manual"
    assert calls["options"]["currency"] == "usd" and calls["amounts"][-1] == 5_000
    assert calls["submitted"] and calls["withElements"]
    assert calls["billing"] == {"name": "Striped Doe", "email": "striped@example.org"}
    [gift] = await donations_of(surge, "Striped")
    assert gift["status"] == "succeeded" and gift["payment_method"] == "pm_card_visa"
