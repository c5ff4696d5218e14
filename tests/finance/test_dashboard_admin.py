"""Administration from the dashboard (admin keys only): open a campaign, issue a key shown once, revoke it."""

from __future__ import annotations

import re

from engine.keys import Role
from tests.finance.conftest import Surge
from tests.finance.test_dashboard_donations import page, sign_in


async def test_an_admin_opens_a_campaign_issues_and_revokes_a_key(surge: Surge) -> None:
    cookie = await sign_in(surge, Role.ADMIN)
    admin = await page(surge, "/dashboard/admin", cookie)
    csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', admin)[1]  # type: ignore[index]

    campaign = {"slug": "smith-2026", "name": "Smith for Senate", "election": "2026-general", "currency": "USD"}
    opened = await surge.client.post(
        "/dashboard/admin/campaigns",
        data={**campaign, "limit": "3,300.00", "csrf": csrf},
        headers=cookie,
        allow_redirects=False,
    )
    assert opened.status == 303 and "opened" in opened.headers["Location"]
    limit = await surge.pool.fetchval("SELECT contribution_limit_minor FROM surge.campaigns WHERE slug = 'smith-2026'")
    assert limit == 330_000
    twice = await surge.client.post(
        "/dashboard/admin/campaigns",
        data={**campaign, "limit": "3300", "csrf": csrf},
        headers=cookie,
        allow_redirects=False,
    )
    assert "exists+already" in twice.headers["Location"]
    bad = await surge.client.post(
        "/dashboard/admin/campaigns",
        data={**campaign, "slug": "Bad Slug", "limit": "1", "csrf": csrf},
        headers=cookie,
        allow_redirects=False,
    )
    assert "Not+opened" in bad.headers["Location"]

    issued = await surge.client.post(
        "/dashboard/admin/keys", data={"role": "form", "label": "smith page", "csrf": csrf}, headers=cookie
    )
    text = await issued.text()
    secret = re.search(r'<code id="secret">(pk_[^<]+)</code>', text)[1]  # type: ignore[index]
    key_id = re.search(r"(key_[0-9a-f]{16})", text)[1]  # type: ignore[index]
    assert issued.headers["Cache-Control"] == "no-store"
    assert (await surge.client.get("/v1/campaigns", headers={"Authorization": f"Bearer {secret}"})).status == 403
    revoked = await surge.client.post(
        f"/dashboard/admin/keys/{key_id}/revoke", data={"csrf": csrf}, headers=cookie, allow_redirects=False
    )
    assert "revoked" in revoked.headers["Location"]
    state = await surge.pool.fetchval("SELECT revoked_at IS NOT NULL FROM surge.api_keys WHERE id = $1", key_id)
    assert state is True
    actions = [r["action"] for r in await surge.pool.fetch("SELECT action FROM surge.audit_events ORDER BY id")]
    assert actions[-3:] == ["campaign_created", "key_created", "key_revoked"]


async def test_finance_keys_cannot_administer_and_forms_need_the_token(surge: Surge) -> None:
    finance = await sign_in(surge, Role.FINANCE)
    assert (await surge.client.get("/dashboard/admin", headers=finance)).status == 403
    admin = await sign_in(surge, Role.ADMIN)
    forged = await surge.client.post(
        "/dashboard/admin/keys", data={"role": "admin"}, headers=admin, allow_redirects=False
    )
    assert forged.status == 403
    assert await surge.pool.fetchval("SELECT count(*) FROM surge.api_keys WHERE role = 'admin'") == 1
