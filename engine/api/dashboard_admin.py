"""The dashboard's administration (admin keys only): open campaigns, issue keys (the secret shown once) and revoke
them — through engine/administration.py, as the API and the CLI do, audited, every form with the session's CSRF token.
"""

from __future__ import annotations

from html import escape
from urllib.parse import urlencode

from aiohttp import web

from engine.administration import issue_key, open_campaign, withdraw_key
from engine.api import dashboard_html as ui
from engine.api.dashboard import DashboardSession, html, redirect, refused, require_form, require_session
from engine.api.requests import actor
from engine.api.state import POOL, PROCESSORS
from engine.campaigns import CampaignExistsError, campaign_from_json, list_campaigns
from engine.keys import Role, list_keys
from engine.validation import ValidationProblem
from ledger.currencies import parse_major

routes = web.RouteTableDef()


def _header(session: DashboardSession) -> str:
    return (
        f"<header><h1>Administration</h1><span>signed in as {escape(session.label)}</span>"
        '<a href="/dashboard">Dashboard</a> <a href="/dashboard/audit">Audit trail</a></header>'
    )


async def _admin(session: DashboardSession) -> None:
    if session.key.role is not Role.ADMIN:
        raise refused("Administration needs an admin key.")


@routes.get("/dashboard/admin")
async def admin_page(request: web.Request) -> web.Response:
    session = await require_session(request)
    await _admin(session)
    keys = await list_keys(request.app[POOL])
    campaigns = await list_campaigns(request.app[POOL])
    notice = request.query.get("notice", "")[:300]
    message = f'<p class="ok" role="status" id="notice">{escape(notice)}</p>' if notice else ""
    csrf = f'<input type="hidden" name="csrf" value="{session.csrf}">'
    key_rows = [
        (
            escape(str(key["id"])),
            escape(str(key["role"])),
            escape(str(key["label"] or "")),
            escape(f"revoked {key['revoked']}" if key["revoked"] else "active"),
            ""
            if key["revoked"]
            else f'<form method="post" action="/dashboard/admin/keys/{escape(str(key["id"]))}/revoke">{csrf}'
            f'<button type="submit" id="revoke-{escape(str(key["id"]))}">Revoke</button></form>',
        )
        for key in keys
    ]
    campaign_rows = [
        (escape(c.slug), escape(c.name), escape(c.election), ui.money(c.contribution_limit_minor, c.currency))
        for c in campaigns
    ]
    roles = "".join(f'<option value="{r.value}">{r.value}</option>' for r in Role)
    body = (
        _header(session)
        + f"<main>{message}"
        + '<section id="new-campaign"><h2>Open a campaign</h2>'
        + '<form method="post" action="/dashboard/admin/campaigns">'
        + csrf
        + '<label for="slug">Slug</label> <input id="slug" name="slug" required pattern="[a-z0-9][a-z0-9-]{0,62}"> '
        + '<label for="name">Name</label> <input id="name" name="name" required> '
        + '<label for="election">Election</label> <input id="election" name="election" required> '
        + '<label for="currency">Currency</label> <input id="currency" name="currency" value="USD" required> '
        + '<label for="limit">Limit per donor</label> <input id="limit" name="limit" value="3500.00" required> '
        + '<button type="submit" id="create-campaign">Open</button></form></section>'
        + '<section id="new-key"><h2>Issue a key</h2><form method="post" action="/dashboard/admin/keys">'
        + csrf
        + f'<label for="role">Role</label> <select id="role" name="role">{roles}</select> '
        + '<label for="label">Label</label> <input id="label" name="label"> '
        + '<button type="submit" id="create-key">Issue</button></form></section>'
        + '<section class="wide" id="keys"><h2>Keys</h2>'
        + ui.table([("Key", False), ("Role", False), ("Label", False), ("State", False), ("", False)], key_rows)
        + "</section>"
        + '<section class="wide" id="campaigns"><h2>Campaigns</h2>'
        + ui.table([("Slug", False), ("Name", False), ("Election", False), ("Limit", True)], campaign_rows)
        + "</section></main>"
    )
    return html(ui.page("Surge finance — administration", body))


@routes.post("/dashboard/admin/campaigns")
async def create_campaign_form(request: web.Request) -> web.Response:
    session, form = await require_form(request)
    await _admin(session)
    currency = str(form.get("currency", "")).strip().upper()
    try:
        limit = parse_major(str(form.get("limit", "")), currency)
        campaign = campaign_from_json(
            {
                "slug": str(form.get("slug", "")).strip(),
                "name": str(form.get("name", "")).strip(),
                "election": str(form.get("election", "")).strip(),
                "currency": currency,
                "contribution_limit": limit,
            }
        )
    except ValidationProblem as problem:
        return _back(f"Not opened: {problem.message}")
    except ValueError as error:
        return _back(f"Not opened: {error}")
    processors = [processor.name for processor, _ in request.app[PROCESSORS]]
    async with request.app[POOL].acquire() as connection:
        try:
            await open_campaign(connection, campaign, processors, actor(request, session.key))
        except CampaignExistsError:
            return _back(f"Not opened: campaign {campaign.slug} exists already")
    return _back(f"Campaign {campaign.slug} opened")


@routes.post("/dashboard/admin/keys")
async def create_key_form(request: web.Request) -> web.Response:
    session, form = await require_form(request)
    await _admin(session)
    try:
        role = Role(str(form.get("role", "")))
    except ValueError:
        return _back("Not issued: no such role")
    label = str(form.get("label", "")).strip()[:200] or None
    async with request.app[POOL].acquire() as connection:
        key, secret = await issue_key(connection, role, label, actor(request, session.key))
    # Shown on this page once, never in a URL (it would land in logs and history).
    body = (
        _header(session)
        + '<main><section class="wide" id="issued-key"><h2>Key issued</h2>'
        + f"<p>{escape(key.id)} ({escape(role.value)}). Copy the secret now: it is shown only this once.</p>"
        + f'<p><code id="secret">{escape(secret)}</code></p><p><a href="/dashboard/admin">Done</a></p>'
        + "</section></main>"
    )
    return html(ui.page("Key issued", body))


@routes.post("/dashboard/admin/keys/{id}/revoke")
async def revoke_key_form(request: web.Request) -> web.Response:
    session, _ = await require_form(request)
    await _admin(session)
    key_id = request.match_info["id"]
    async with request.app[POOL].acquire() as connection:
        revoked = await withdraw_key(connection, key_id, actor(request, session.key))
    return _back(f"Key {key_id} revoked" if revoked else f"Key {key_id} was not active")


def _back(notice: str) -> web.Response:
    return redirect(f"/dashboard/admin?{urlencode({'notice': notice})}")
