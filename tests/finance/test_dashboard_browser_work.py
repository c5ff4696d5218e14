"""Finance's day in a real headless Chromium (Playwright, Debian's Chromium): sign in, find a donation, refund part
of it, run a reconciliation, resolve a planted exception, download Schedule A and compare it with the API's — at
desktop and phone widths, screenshots saved by the run (issue 15)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import pytest

from engine.keys import Role
from tests.finance.browser import launch_chromium
from tests.finance.conftest import Surge, donation
from tests.finance.test_dashboard_finance import plant_missing_charge

PAGE_TIMEOUT_MS = 30_000
pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("width", "height"), [(1280, 1000), (390, 844)])
async def test_a_finance_day_in_the_browser(
    surge: Surge, chromium: str, tmp_path: Path, width: int, height: int
) -> None:
    status, gift = await surge.donate(donation(12_000, first_name="Ada", last_name="Lovelace", email="ada@example.org"))
    assert status == 201
    assert (await surge.donate(donation(30_000, first_name="Grace", last_name="Hopper")))[0] == 201
    orphan = await plant_missing_charge(surge)
    today = datetime.now(UTC).date().isoformat()
    shots = tmp_path / f"{width}px"
    shots.mkdir()

    async with launch_chromium(chromium) as browser:
        context = await browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
        page = await context.new_page()
        page.set_default_timeout(PAGE_TIMEOUT_MS)

        async def fits() -> None:
            overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0 or width > 600, f"{urlparse(page.url).path} is {overflow}px wider than the phone"

        await page.goto(str(surge.client.make_url("/dashboard")))
        await page.fill("#key", surge.keys[Role.FINANCE])
        async with page.expect_navigation():
            await page.click("#sign-in")
        await page.screenshot(path=shots / "dashboard.png", full_page=True)

        # Find the donation and refund part of it, confirming first.
        async with page.expect_navigation():
            await page.click("#donations-link")
        await page.fill("#q", "lovelace")
        async with page.expect_navigation():
            await page.click("#search")
        await fits()
        async with page.expect_navigation():
            await page.click(f"text={gift['id']}")
        assert "Lovelace" in await page.inner_text("#donation-facts")
        await fits()
        await page.fill("#refund-amount", "45.50")
        async with page.expect_navigation():
            await page.click("#refund")
        assert "45.50 USD" in await page.inner_text("#refund-confirmation")
        async with page.expect_navigation():
            await page.click("#confirm-refund")
        assert "45.50 USD succeeded" in await page.inner_text("#notice")
        assert "succeeded" in await page.inner_text("#donation-refunds")
        await page.screenshot(path=shots / "donation.png", full_page=True)

        # Reconcile today and resolve the planted exception with its proposed entry.
        await page.goto(str(surge.client.make_url("/dashboard/reconciliations")))
        await page.fill("#from", today)
        await page.fill("#to", today)
        async with page.expect_navigation():
            await page.click("#run")
        run_text = await page.inner_text("#reconciliation")
        assert f"charge:{orphan}" in run_text
        await fits()
        memo = page.locator("input[name=memo]").first
        await memo.fill("booked from the processor's record")
        async with page.expect_navigation():
            await page.locator("button[id^=resolve-]").first.click()
        assert "resolved with entry" in await page.inner_text("#notice")
        await page.screenshot(path=shots / "reconciliations.png", full_page=True)

        # Download Schedule A and compare it with the API's.
        await page.goto(str(surge.client.make_url("/dashboard/reports")))
        await page.select_option("#report", "schedule-a")
        await page.fill("#campaign", "demo")
        await page.fill("#from", today)
        await page.fill("#to", today)
        async with page.expect_download() as waiting:
            await page.click("#export")
        download = await waiting.value
        saved = shots / download.suggested_filename
        await download.save_as(saved)
        api = await surge.client.get(
            "/v1/reports/schedule-a",
            params={"campaign": "demo", "from": today, "to": today, "format": "csv"},
            headers=surge.auth(Role.FINANCE),
        )
        assert saved.read_bytes() == await api.read() and b"Hopper" in saved.read_bytes()
        await fits()
        await context.close()

    refunded = await surge.pool.fetchval("SELECT refunded_minor FROM surge.donations WHERE id = $1", gift["id"])
    assert refunded == 4_550
    assert all((shots / name).stat().st_size > 10_000 for name in ("dashboard.png", "donation.png"))
