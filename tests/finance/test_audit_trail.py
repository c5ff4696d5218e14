"""The audit trail: every action a person takes is recorded with who, when, from where and what changed, in the
action's own transaction; the trail is append-only; keys can be revoked (issue 15)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from engine.api.dashboard import COOKIE_NAME
from engine.keys import Role
from tests.commands import run_cli
from tests.finance.conftest import Surge, donation


async def trail(surge: Surge, **query: str) -> list[dict[str, Any]]:
    response = await surge.client.get("/v1/audit-events", params=query, headers=surge.auth(Role.FINANCE))
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body["data"]


async def test_a_refund_is_recorded_with_who_and_from_where_once(surge: Surge) -> None:
    _, gift = await surge.donate(donation(5_000))
    headers = {**surge.auth(Role.FINANCE), "Idempotency-Key": "audited-refund"}
    for _ in range(2):  # a replay of the same request is not a second action
        response = await surge.client.post(
            f"/v1/donations/{gift['id']}/refunds", json={"amount": 1_200}, headers=headers
        )
        assert response.status == 200
    finance_key = await surge.pool.fetchval("SELECT id FROM surge.api_keys WHERE role = 'finance'")
    [event] = await trail(surge, action="refund_requested")
    assert (event["actor"], event["address"], event["subject"]) == (f"key:{finance_key}", "127.0.0.1", gift["id"])
    assert event["changes"]["amount"] == 1_200 and event["changes"]["currency"] == "USD"
    # A refused refund writes nothing: the record commits with the reservation or not at all.
    refused = await surge.client.post(
        f"/v1/donations/{gift['id']}/refunds",
        json={"amount": 999_999},
        headers={**surge.auth(Role.FINANCE), "Idempotency-Key": "too-much"},
    )
    assert refused.status == 400
    assert len(await trail(surge, action="refund_requested")) == 1


async def test_keys_created_and_revoked_are_recorded_and_a_revoked_key_ends_its_sessions(surge: Surge) -> None:
    admin = surge.auth(Role.ADMIN)
    created = await (
        await surge.client.post("/v1/keys", json={"role": "finance", "label": "ana"}, headers=admin)
    ).json()
    login = await surge.client.post("/dashboard/login", data={"key": created["secret"]}, allow_redirects=False)
    assert login.status == 303
    token = login.cookies[COOKIE_NAME].value
    surge.client.session.cookie_jar.clear()

    revoked = await surge.client.delete(f"/v1/keys/{created['id']}", headers=admin)
    assert revoked.status == 200 and (await revoked.json())["revoked"] is not None
    again = await surge.client.delete(f"/v1/keys/{created['id']}", headers=admin)
    assert again.status == 200  # revoking twice changes nothing
    assert (await surge.client.delete("/v1/keys/key_nope", headers=admin)).status == 404
    dashboard = await surge.client.get(
        "/dashboard", headers={"Cookie": f"{COOKIE_NAME}={token}"}, allow_redirects=False
    )
    assert dashboard.status == 303  # its session ended with it

    actions = [(e["action"], e["subject"]) for e in await trail(surge)]
    assert actions == [
        ("key_revoked", created["id"]),
        ("signed_in", "dashboard"),
        ("key_created", created["id"]),
    ]
    listed = await (await surge.client.get("/v1/keys", headers=admin)).json()
    assert all("secret" not in key for key in listed["data"])
    assert (await surge.client.get("/v1/audit-events", headers=surge.auth(Role.FORM))).status == 403


async def test_sign_in_refusals_and_campaigns_are_recorded(surge: Surge) -> None:
    assert (await surge.client.post("/dashboard/login", data={"key": "sk_fin_guess"})).status == 401
    body = {"slug": "audited", "name": "Audited", "election": "2026", "currency": "USD"}
    assert (await surge.client.post("/v1/campaigns", json=body, headers=surge.auth(Role.ADMIN))).status == 201
    events = await trail(surge)
    assert [(e["action"], e["actor"]) for e in events][-1] == ("sign_in_refused", "unknown")
    campaign = next(e for e in events if e["action"] == "campaign_created")
    assert campaign["subject"] == "audited" and campaign["changes"]["name"] == "Audited"


async def test_the_trail_pages_newest_first_and_is_append_only(surge: Surge) -> None:
    admin = surge.auth(Role.ADMIN)
    for label in ("a", "b", "c"):
        await surge.client.post("/v1/keys", json={"role": "form", "label": label}, headers=admin)
    first = await trail(surge, limit="2")
    rest = await trail(surge, limit="2", starting_after=str(first[-1]["id"]))
    assert [e["changes"]["label"] for e in first + rest] == ["c", "b", "a"]
    assert (await surge.client.get("/v1/audit-events?starting_after=x", headers=surge.auth(Role.FINANCE))).status == 400
    async with surge.pool.acquire() as connection:
        for statement in ("UPDATE surge.audit_events SET actor = 'someone else'", "DELETE FROM surge.audit_events"):
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await connection.execute(statement)


async def test_the_command_line_records_its_operator(surge: Surge, database_url: str, tmp_path: Path) -> None:
    created = await run_cli(database_url, tmp_path, "keys", "create", "--role", "finance", "--label", "cli")
    assert created.returncode == 0, created.stderr
    key_id = created.stdout.split()[0]
    revoked = await run_cli(database_url, tmp_path, "keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert (await run_cli(database_url, tmp_path, "keys", "revoke", "key_missing")).returncode == 2
    listing = orjson.loads((await run_cli(database_url, tmp_path, "audit", "--json")).stdout)["data"]
    assert [(e["action"], e["subject"]) for e in listing[:2]] == [("key_revoked", key_id), ("key_created", key_id)]
    assert all(e["actor"].startswith("cli:") and e["address"] is None for e in listing[:2])
    keys = orjson.loads((await run_cli(database_url, tmp_path, "keys", "list", "--json")).stdout)["data"]
    assert next(k for k in keys if k["id"] == key_id)["revoked"] is not None


async def test_the_dashboard_shows_the_trail(surge: Surge) -> None:
    login = await surge.client.post("/dashboard/login", data={"key": surge.keys[Role.FINANCE]}, allow_redirects=False)
    token = login.cookies[COOKIE_NAME].value
    surge.client.session.cookie_jar.clear()
    page = await surge.client.get("/dashboard/audit", headers={"Cookie": f"{COOKIE_NAME}={token}"})
    text = await page.text()
    assert page.status == 200 and 'id="audit-events"' in text and "signed in" in text
    assert (await surge.client.get("/dashboard/audit", allow_redirects=False)).status == 303
