"""Signed links: Quick Donate (one gift however often followed; confirm above the campaign's amount; authentication
sends the donor to the page), managing a plan, and the donor profile reached by an emailed link."""

from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from engine.keys import Role
from engine.recurring.links import LinkKind, LinkRefusal, LinkSigner
from tests.e2e.conftest import Surge, running_surge, surge_settings
from tests.recurring.conftest import FAST_SCHEDULER, create_plan, plan_body
from tests.waiting import wait_until

SIGNER = LinkSigner(b"k" * 32)


def test_a_link_verifies_and_a_changed_expired_or_other_kind_one_does_not() -> None:
    token = SIGNER.sign(LinkKind.MANAGE_PLAN, {"plan": "plan_1"}, ttl_s=60, now_s=1000)
    assert SIGNER.verify(LinkKind.MANAGE_PLAN, token, now_s=1030) == {"plan": "plan_1", "exp": 1060}
    assert SIGNER.verify(LinkKind.MANAGE_PLAN, token, now_s=1061) is LinkRefusal.EXPIRED
    assert SIGNER.verify(LinkKind.PROFILE, token, now_s=1030) is LinkRefusal.TAMPERED
    _payload, signature = token.split(".")
    forged = SIGNER.sign(LinkKind.MANAGE_PLAN, {"plan": "plan_2"}, ttl_s=60, now_s=1000).split(".")[0]
    assert SIGNER.verify(LinkKind.MANAGE_PLAN, f"{forged}.{signature}", now_s=1030) is LinkRefusal.TAMPERED
    assert SIGNER.verify(LinkKind.MANAGE_PLAN, "no-dot", now_s=1030) is LinkRefusal.MALFORMED
    assert LinkSigner(b"x" * 32).verify(LinkKind.MANAGE_PLAN, token, now_s=1030) is LinkRefusal.TAMPERED


@pytest.fixture
async def surge(database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_surge(database_url, surge_settings(database_url, tmp_path, **FAST_SCHEDULER)) as running:
        yield running


def path_of(url: str) -> str:
    return urlsplit(url).path


async def saved_method(surge: Surge, payment_method: str = "pm_card_visa") -> tuple[str, dict[str, Any]]:
    status, plan = await create_plan(surge, plan_body(payment_method=payment_method, installments=1))
    assert status == 201, plan
    return plan["payment_method"]["id"], plan


async def quick_link(surge: Surge, method: str, amount: int, refcode: str | None = None) -> str:
    body = {"saved_method": method, "campaign": "demo", "amount": amount, "refcode": refcode}
    response = await surge.client.post("/v1/recurring/quick-links", json=body, headers=surge.auth(Role.FINANCE))
    assert response.status == 201, await response.text()
    return path_of((await response.json())["url"])


async def quick_gifts(surge: Surge) -> list[Any]:
    return await surge.pool.fetch(
        "SELECT amount_minor, status, refcode FROM surge.donations WHERE metadata ? 'quick_donate'"
    )


async def test_a_quick_donate_link_followed_twice_gives_one_gift(surge: Surge) -> None:
    method, _ = await saved_method(surge)
    link = await quick_link(surge, method, 1_500, refcode="email-june")
    first = await surge.client.get(link)
    second = await surge.client.get(link)
    assert first.status == second.status == 200
    assert "went through" in await first.text()
    assert [tuple(g) for g in await quick_gifts(surge)] == [(1_500, "succeeded", "email-june")]
    assert first.headers["Cache-Control"] == "no-store" and first.headers["Referrer-Policy"] == "no-referrer"


async def test_a_tampered_or_expired_quick_link_is_refused_with_a_clear_page(surge: Surge) -> None:
    method, _ = await saved_method(surge)
    link = await quick_link(surge, method, 1_500)
    tampered = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
    response = await surge.client.get(tampered)
    assert response.status == 400 and "This link is not valid" in await response.text()
    signer = surge.app[__import__("engine.api.recurring_pages", fromlist=["LINK_SIGNER"]).LINK_SIGNER]
    expired = signer.sign(
        LinkKind.QUICK_DONATE, {"link": "x", "method": method, "campaign": "demo", "amount": 100}, ttl_s=-1
    )
    response = await surge.client.get(f"/quick/{expired}")
    assert response.status == 410 and "expired" in await response.text()
    assert await quick_gifts(surge) == []


async def test_above_the_campaigns_amount_the_donor_confirms_first(surge: Surge) -> None:
    await surge.client.put(
        "/v1/campaigns/demo/recurring", json={"quick_donate_confirm_above": 5_000}, headers=surge.auth(Role.ADMIN)
    )
    method, _ = await saved_method(surge)
    link = await quick_link(surge, method, 10_000)
    shown = await surge.client.get(link)
    assert shown.status == 200 and 'method="post"' in await shown.text()
    assert await quick_gifts(surge) == []
    confirmed = await surge.client.post(link)
    assert confirmed.status == 200 and "went through" in await confirmed.text()
    again = await surge.client.get(link)  # followed again: the gift it made, not a second confirmation
    assert again.status == 200 and "went through" in await again.text()
    assert len(await quick_gifts(surge)) == 1


async def test_authentication_required_sends_the_donor_to_the_page(surge: Surge) -> None:
    method, _ = await saved_method(surge, "pm_card_authenticationRequired")
    response = await surge.client.get(await quick_link(surge, method, 1_000, refcode="sms"))
    assert response.status == 402
    assert "/donate/demo?amount=10.00&amp;refcode=sms" in await response.text()


async def test_the_manage_link_changes_the_amount_and_cancels(surge: Surge) -> None:
    status, plan = await create_plan(surge, plan_body(1_000))
    assert status == 201
    link = path_of(plan["manage_url"])
    shown = await surge.client.get(link)
    assert shown.status == 200 and "10.00 USD every week" in await shown.text()
    changed = await surge.client.post(f"{link}/amount", data={"amount": "20"})
    assert changed.status == 200
    assert await surge.pool.fetchval("SELECT amount_minor FROM surge.recurring_plans") == 2_000
    cancelled = await surge.client.post(f"{link}/cancel")
    assert cancelled.status == 200 and "cancelled" in await cancelled.text()
    assert await surge.pool.fetchval("SELECT status FROM surge.recurring_plans") == "cancelled"
    forged = await surge.client.post(f"{link[:-2]}xx/cancel")
    assert forged.status == 400


async def test_the_profile_link_is_emailed_and_lists_and_deletes_saved_cards(surge: Surge, tmp_path: Path) -> None:
    _method, plan = await saved_method(surge)
    await wait_until(lambda: plan_status(surge, plan["id"], "completed"), what="the one installment charged")
    status, open_plan = await create_plan(surge, plan_body(start=None))
    assert status == 201
    response = await surge.client.post("/recurring/profile", data={"email": "Jane@Example.org"})
    assert response.status == 200
    unknown = await surge.client.post("/recurring/profile", data={"email": "nobody@example.org"})
    assert await unknown.text() == await response.text()  # nobody learns who has a profile
    (mail,) = [p for p in (tmp_path / "outbox").glob("profile_*.eml")]
    link = path_of(re.search(r"http://\S+/recurring/profile/\S+", mail.read_text()).group(0))  # type: ignore[union-attr]
    page = await surge.client.get(link)
    text = await page.text()
    assert page.status == 200 and text.count("Visa ending 4242") >= 2
    delete = re.search(r'action="(/recurring/profile/[^"]+/delete)"', text).group(1)  # type: ignore[union-attr]
    deleted = await surge.client.post(delete)
    assert deleted.status == 200 and "deleted" in await deleted.text()
    statuses = dict(await surge.pool.fetch("SELECT id, deleted_at IS NOT NULL FROM surge.saved_payment_methods"))
    assert sum(statuses.values()) == 1
    assert await surge.pool.fetchval("SELECT verified_at IS NOT NULL FROM surge.donor_profiles")
    if statuses[open_plan["payment_method"]["id"]]:
        assert await plan_status(surge, open_plan["id"], "cancelled")


async def plan_status(surge: Surge, plan_id: str, wanted: str) -> bool:
    return bool(
        await surge.pool.fetchval("SELECT status = $2 FROM surge.recurring_plans WHERE id = $1", plan_id, wanted)
    )


async def test_the_donation_page_offers_make_it_monthly(surge: Surge) -> None:
    page = await surge.client.get("/donate/demo")
    assert 'id="make-monthly"' in await page.text() and 'id="save-card"' in await page.text()
    script = await (await surge.client.get("/donate/static/donate.js")).text()
    assert "/v1/recurring/plans" in script and 'interval: "month"' in script and "installments: 1" in script
    # What the page posts with "make it monthly": the donation body plus the interval, with the page's form key.
    form_key = re.search(r'data-form-key="([^"]+)"', await page.text())[1]  # type: ignore[index]
    response = await surge.client.post(
        "/v1/recurring/plans",
        json={**plan_body(2_500), "interval": "month"},
        headers={"Authorization": f"Bearer {form_key}", "Idempotency-Key": "page_abc"},
    )
    body = await response.json()
    assert response.status == 201 and body["interval"] == "month" and body["manage_url"]


async def test_every_installments_receipt_carries_the_manage_link(surge: Surge, tmp_path: Path) -> None:
    status, plan = await create_plan(surge, plan_body(1_000, installments=1))
    assert status == 201, plan

    async def receipt_sent() -> bool:
        return bool(
            await surge.pool.fetchval(
                """SELECT count(*) FROM surge.receipts r JOIN surge.recurring_installments i USING (donation_id)
                    WHERE i.plan_id = $1 AND r.status = 'sent'""",
                plan["id"],
            )
        )

    await wait_until(receipt_sent, what="the installment's receipt sent")
    donation_id = await surge.pool.fetchval(
        "SELECT donation_id FROM surge.recurring_installments WHERE plan_id = $1", plan["id"]
    )
    message: Any = email.message_from_bytes(
        (tmp_path / "outbox" / f"rcpt_{donation_id}.eml").read_bytes(), policy=email.policy.default
    )
    text = message.get_body(preferencelist=("plain",)).get_content()
    link = re.search(r"cancel it: (\S+)", text)
    assert link is not None, text
    shown = await surge.client.get(path_of(link.group(1)))
    assert shown.status == 200 and "10.00 USD" in await shown.text()
