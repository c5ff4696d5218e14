"""'Make it monthly' on the donation page, in a real headless Chromium: the donor ticks the box, the page makes a
monthly plan on the saved card, shows its confirmation with the manage link, and the first gift is charged."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.donor_page.test_page_browser import DESKTOP, fill_card, fill_donor, open_page
from tests.e2e.conftest import Surge, running_surge, surge_settings
from tests.finance.browser import launch_chromium
from tests.recurring.conftest import FAST_SCHEDULER
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
async def surge(database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_surge(database_url, surge_settings(database_url, tmp_path, **FAST_SCHEDULER)) as running:
        yield running


async def test_a_donor_makes_it_monthly_from_the_page(surge: Surge, chromium: str) -> None:
    async with launch_chromium(chromium) as browser:
        page = await open_page(browser, surge, "/donate/demo?refcode=monthly-ask", DESKTOP)
        await page.click("label[for=preset-2]")  # $25
        await fill_donor(page, "Monty")
        await fill_card(page, "4242 4242 4242 4242")
        await page.check("#make-monthly")
        await page.click("#donate-button")
        await page.wait_for_selector("#monthly-confirmation:not([hidden]), #form-error:not([hidden])")
        assert await page.is_visible("#monthly-confirmation"), await page.text_content("#form-error")
        assert await page.text_content("#monthly-amount") == "25.00 USD"
        manage = await page.get_attribute("#monthly-manage", "href")
        assert manage and "/recurring/manage/" in manage
        assert page.errors == []  # type: ignore[attr-defined]

    plan = await surge.pool.fetchrow("SELECT id, interval, amount_minor, refcode FROM surge.recurring_plans")
    assert (plan["interval"], plan["amount_minor"], plan["refcode"]) == ("month", 2_500, "monthly-ask")

    async def first_gift_charged() -> bool:
        status = await surge.pool.fetchval(
            "SELECT status FROM surge.recurring_installments WHERE plan_id = $1 AND period = 0", plan["id"]
        )
        return status == "succeeded"

    await wait_until(first_gift_charged, what="the first monthly gift charged")
