"""The finance dashboard: its sign-in over plain HTTP (cookie attributes, refusals, revocation), then the real
thing in headless Chromium — redirected to sign in, signed in with the finance key, the page read and pictured."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.base import ChargeRequest
from engine.api.dashboard import COOKIE_NAME
from engine.keys import Role
from ledger.money import Money
from tests.finance.browser import Browser, install_chromium
from tests.finance.conftest import Surge, donation, simulated_processor


@pytest.fixture(scope="session")
def chromium() -> Iterator[str]:
    executable, reason = install_chromium()
    if executable is None:
        pytest.skip(reason)
    yield executable


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

    browser = await Browser.launch(chromium, tmp_path / "profile")
    try:
        await browser.navigate(str(surge.client.make_url("/dashboard")))
        assert await browser.evaluate("location.pathname") == "/dashboard/login"

        await browser.submit("document.getElementById('key').value = 'sk_fin_guess'; document.forms[0].submit()")
        assert await browser.evaluate("document.getElementById('login-error').textContent") == (
            "That is not a finance key."
        )

        finance_key = surge.keys[Role.FINANCE]
        await browser.submit(
            f"document.getElementById('key').value = {finance_key!r}; document.getElementById('sign-in').click()"
        )
        assert await browser.evaluate("location.pathname") == "/dashboard"
        assert await browser.evaluate("document.cookie") == ""  # HttpOnly: no script can read the session
        totals = await browser.evaluate("document.getElementById('campaign-totals').innerText")
        assert "demo" in totals and "60.03 USD" in totals  # 20.00 + 20.01 + 20.02
        trial = await browser.evaluate("document.getElementById('trial-balance').innerText")
        assert "contributions:demo" in trial and "balanced" in trial and "NOT BALANCED" not in trial
        reconciliation = await browser.evaluate("document.getElementById('reconciliation').innerText")
        assert "missing_in_ledger" in reconciliation and "charge:don_lost" in reconciliation
        bars = await browser.evaluate(
            "[...document.querySelectorAll('#donations-chart rect.bar')].map(r => +r.dataset.count)"
        )
        assert len(bars) == 60 and sum(bars) == 3
        image = await browser.screenshot(tmp_path / "dashboard.png")
        assert image.startswith(b"\x89PNG") and len(image) > 20_000

        await browser.submit("document.querySelector('form[action=\"/dashboard/logout\"]').submit()")
        assert await browser.evaluate("location.pathname") == "/dashboard/login"
        await browser.navigate(str(surge.client.make_url("/dashboard")))
        assert await browser.evaluate("location.pathname") == "/dashboard/login"
    finally:
        await browser.close()
