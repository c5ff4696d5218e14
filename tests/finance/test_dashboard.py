"""The finance dashboard: its sign-in over plain HTTP (cookie attributes, refusals, revocation), then the real
thing in headless Chromium under Playwright — redirected to sign in, the key typed and submitted, the page read and
pictured, signed out with its button."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

from adapters.base import ChargeRequest
from engine.api.dashboard import COOKIE_NAME
from engine.keys import Role
from ledger.money import Money
from tests.finance.browser import launch_chromium
from tests.finance.conftest import Surge, donation, simulated_processor

PAGE_TIMEOUT_MS = 30_000


async def sign_in(surge: Surge, key: str, **headers: str) -> tuple[int, str | None]:
    response = await surge.client.post("/dashboard/login", data={"key": key}, headers=headers, allow_redirects=False)
    surge.client.session.cookie_jar.clear()  # each request below names its cookie itself
    return response.status, response.headers.get("Set-Cookie")


async def open_dashboard(surge: Surge, cookie: str | None) -> tuple[int, str]:
    headers = {"Cookie": f"{COOKIE_NAME}={cookie}"} if cookie else {}
    response = await surge.client.get("/dashboard", headers=headers, allow_redirects=False)
    return response.status, response.headers.get("Location") or await response.text()


async def test_sign_in_sets_a_strict_http_only_session_cookie(surge: Surge) -> None:
    assert await open_dashboard(surge, None) == (303, "/dashboard/login")
    assert (await surge.client.get("/dashboard/login")).status == 200
    assert (await sign_in(surge, "sk_fin_wrong"))[0] == 401
    assert (await sign_in(surge, surge.keys[Role.FORM]))[0] == 401  # a form key is public: never a finance login
    cross_site = await sign_in(surge, surge.keys[Role.FINANCE], Origin="https://evil.example")
    assert cross_site == (403, None)

    status, set_cookie = await sign_in(surge, surge.keys[Role.FINANCE])
    assert status == 303 and set_cookie is not None
    attributes = [part.strip().lower() for part in set_cookie.split(";")]
    assert {"httponly", "samesite=strict", "path=/dashboard"} <= set(attributes)
    token = set_cookie.split(";")[0].split("=", 1)[1]
    assert surge.keys[Role.FINANCE] not in set_cookie and len(token) >= 40
    stored = await surge.pool.fetchval(
        "SELECT count(*) FROM surge.dashboard_sessions WHERE token_hash = sha256($1)", token.encode()
    )
    assert stored == 1  # only the token's hash is kept

    response = await surge.client.get("/dashboard", headers={"Cookie": f"{COOKIE_NAME}={token}"})
    assert response.status == 200
    assert "script-src" not in response.headers["Content-Security-Policy"]  # no script at all: default-src 'none'
    assert response.headers["Cache-Control"] == "no-store"
    page = await response.text()
    assert 'id="campaign-totals"' in page and 'id="no-reconciliation"' in page
    assert (await open_dashboard(surge, token + "x"))[0] == 303

    # Revoking the key ends its sessions.
    await surge.pool.execute("UPDATE surge.api_keys SET revoked_at = now() WHERE role = 'finance'")
    assert (await open_dashboard(surge, token))[0] == 303


async def test_sign_out_ends_the_session(surge: Surge) -> None:
    _, set_cookie = await sign_in(surge, surge.keys[Role.ADMIN])
    assert set_cookie is not None
    token = set_cookie.split(";")[0].split("=", 1)[1]
    assert (await open_dashboard(surge, token))[0] == 200
    response = await surge.client.post(
        "/dashboard/logout", headers={"Cookie": f"{COOKIE_NAME}={token}"}, allow_redirects=False
    )
    assert response.status == 303
    assert (await open_dashboard(surge, token))[0] == 303


async def test_the_dashboard_in_a_real_browser(surge: Surge, chromium: str, tmp_path: Path) -> None:
    # Something to show: three donations, and a reconciliation that found a charge missing from the ledger.
    for n in range(3):
        status, _ = await surge.donate(donation(2_000 + n, first_name=f"Web{n}"))
        assert status == 201
    processor = simulated_processor(surge)
    await processor.charge(ChargeRequest("surge-don_lost", "don_lost", Money(7_500, "USD"), "pm_card_visa", "demo"))
    now = datetime.now(UTC)
    response = await surge.client.post(
        "/v1/reconciliations",
        json={
            "processor": "simulated",
            "from": (now - timedelta(hours=1)).isoformat(),
            "to": (now + timedelta(minutes=1)).isoformat(),
        },
        headers=surge.auth(Role.FINANCE),
    )
    assert response.status == 201

    dashboard = str(surge.client.make_url("/dashboard"))
    async with launch_chromium(chromium) as browser:
        context = await browser.new_context(viewport={"width": 1280, "height": 1500})
        page = await context.new_page()
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        await page.goto(dashboard)
        assert urlparse(page.url).path == "/dashboard/login"

        # A wrong key, typed and submitted as a person would: the form says so.
        await page.fill("#key", "sk_fin_guess")
        async with page.expect_navigation():
            await page.press("#key", "Enter")
        assert await page.text_content("#login-error") == "That is not a finance key."

        await page.fill("#key", surge.keys[Role.FINANCE])
        async with page.expect_navigation():
            await page.click("#sign-in")
        assert urlparse(page.url).path == "/dashboard"
        assert await page.evaluate("document.cookie") == ""  # HttpOnly: no script can read the session
        [session] = await context.cookies()
        assert session["name"] == COOKIE_NAME and session["httpOnly"] and session["sameSite"] == "Strict"
        totals = await page.inner_text("#campaign-totals")
        assert "demo" in totals and "60.03 USD" in totals  # 20.00 + 20.01 + 20.02
        trial = await page.inner_text("#trial-balance")
        assert "contributions:demo" in trial and "balanced" in trial and "NOT BALANCED" not in trial
        reconciliation = await page.inner_text("#reconciliation")
        assert "missing_in_ledger" in reconciliation and "charge:don_lost" in reconciliation
        bars = await page.eval_on_selector_all("#donations-chart rect.bar", "rects => rects.map(r => +r.dataset.count)")
        assert len(bars) == 60 and sum(bars) == 3
        image = await page.screenshot(path=tmp_path / "dashboard.png", full_page=True)
        assert image.startswith(b"\x89PNG") and len(image) > 20_000

        async with page.expect_navigation():
            await page.get_by_role("button", name="Sign out").click()
        assert urlparse(page.url).path == "/dashboard/login"
        assert await context.cookies() == []  # the session cookie is gone with the session
        await page.goto(dashboard)
        assert urlparse(page.url).path == "/dashboard/login"
        await context.close()
