"""`/dashboard`: the read-only finance dashboard, for a browser.

A browser cannot send ``Authorization: Bearer`` when it navigates, so the dashboard has its own sign-in: a form
posts a finance (or admin) API key once; the engine verifies it and answers with a session cookie holding a fresh
random token — ``HttpOnly`` (no script can read it), ``SameSite=Strict`` (no other site can make the browser send
it, which is the CSRF defence for the sign-out form), ``Path=/dashboard``, ``Secure`` when served over HTTPS, for
8 hours. The database keeps only the token's SHA-256 and the key it was made from, so a stolen database copy holds
no usable session, and revoking the key ends its sessions. The key itself is never put in a URL (it would land in
logs and history) and never stored by the browser. Sign-in and sign-out also refuse a cross-origin ``Origin``.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDictProxy

from engine.api import dashboard_html
from engine.api.replica import read_connection
from engine.api.requests import actor, client_ip
from engine.api.state import KEYS, POOL
from engine.audit import Actor, AuditAction, read, record
from engine.finance.attention import attention
from engine.finance.reconcile.history import latest_run, open_exception_count
from engine.finance.reports.campaign_days import campaign_days
from engine.finance.reports.donation_series import Flow, Span, money_flows, pace
from engine.finance.reports.refcodes import refcode_totals
from engine.finance.reports.trial_balance import trial_balance
from engine.keys import ApiKey, Role

routes = web.RouteTableDef()

COOKIE_NAME = "surge_dashboard"
SESSION_LIFETIME = timedelta(hours=8)
KEY_LENGTH_MAX = 200
_SECURITY_HEADERS = {
    # No script, no external resource: inline CSS and SVG only.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # Not "no-referrer": with it, browsers send "Origin: null" on the sign-in form's post, and the origin check fails.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8", headers=_SECURITY_HEADERS)


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, **_SECURITY_HEADERS})


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    # Browsers send Origin on form posts; "null" comes from sandboxed or privacy-stripped contexts.
    return origin is None or origin == f"{request.scheme}://{request.host}"


async def create_session(connection: asyncpg.Connection, key: ApiKey) -> str:
    token = secrets.token_urlsafe(32)
    await connection.execute("DELETE FROM surge.dashboard_sessions WHERE expires_at < now()")
    await connection.execute(
        "INSERT INTO surge.dashboard_sessions (token_hash, api_key_id, expires_at) VALUES ($1, $2, now() + $3)",
        _token_hash(token),
        key.id,
        SESSION_LIFETIME,
    )
    return token


@dataclass(frozen=True, slots=True)
class DashboardSession:
    key: ApiKey
    label: str
    csrf: str  # the token every form of this session posts back


def csrf_token(cookie_token: str) -> str:
    """A form token bound to the session: computed from the cookie's token, which no other site can read (HttpOnly,
    SameSite=Strict), so a forged post cannot carry it; nothing more to store."""
    return hashlib.sha256(b"surge-dashboard-csrf:" + cookie_token.encode()).hexdigest()


async def signed_in(request: web.Request, connection: asyncpg.Connection) -> DashboardSession | None:
    """The session of this request's cookie, if live and its key not revoked."""
    token = request.cookies.get(COOKIE_NAME)
    if not token or len(token) > KEY_LENGTH_MAX:
        return None
    row = await connection.fetchrow(
        """SELECT k.id, k.role, coalesce(k.label, k.id) AS label
             FROM surge.dashboard_sessions s JOIN surge.api_keys k ON k.id = s.api_key_id
            WHERE s.token_hash = $1 AND s.expires_at > now() AND k.revoked_at IS NULL
              AND k.role IN ('finance', 'admin')""",
        _token_hash(token),
    )
    if row is None:
        return None
    return DashboardSession(ApiKey(row["id"], Role(row["role"])), row["label"], csrf_token(token))


async def require_session(request: web.Request) -> DashboardSession:
    """The request's session; without one, the answer is the way to the sign-in form (raised)."""
    async with request.app[POOL].acquire() as connection:
        session = await signed_in(request, connection)
    if session is None:
        raise web.HTTPSeeOther("/dashboard/login", headers=_SECURITY_HEADERS)
    return session


async def require_form(request: web.Request) -> tuple[DashboardSession, MultiDictProxy[Any]]:
    """The session and the form it posted; a post that is not this dashboard's own is refused (raised, 403)."""
    session = await require_session(request)
    form = await posted_form(request, session)
    if form is None:
        raise refused("The form was not posted from this dashboard.")
    return session, form


def refused(message: str) -> web.HTTPForbidden:
    page = dashboard_html.page("Refused", f'<p class="error">{escape(message)}</p>')
    return web.HTTPForbidden(text=page, content_type="text/html", headers=_SECURITY_HEADERS)


async def posted_form(request: web.Request, session: DashboardSession) -> MultiDictProxy[Any] | None:
    """The form a signed-in page posted, or None when it is not to be acted on: from another origin, unreadable,
    or without this session's CSRF token."""
    if not _same_origin(request):
        return None
    form = await _sign_in_form(request)
    if form is None or not secrets.compare_digest(str(form.get("csrf", "")), session.csrf):
        return None
    return form


@routes.get("/dashboard/login")
async def login_form(request: web.Request) -> web.Response:
    return html(dashboard_html.login_page())


# What aiohttp's form and multipart readers raise on a body that does not match its Content-Type (a missing or bad
# boundary, an unknown charset or transfer encoding, a truncated part). A body too large stays a 413 (HTTPException).
_UNREADABLE_FORM = (ValueError, LookupError, RuntimeError, TypeError, AssertionError, HttpProcessingError)


async def _sign_in_form(request: web.Request) -> MultiDictProxy[Any] | None:
    """The posted form, or None when its body cannot be read as the form its Content-Type claims (a multipart type
    without a boundary, a broken multipart body): the client's mistake, answered 400, never an engine error."""
    try:
        return await request.post()
    except _UNREADABLE_FORM:
        return None


@routes.post("/dashboard/login")
async def login(request: web.Request) -> web.Response:
    if not _same_origin(request):
        return html(dashboard_html.login_page("Sign-in must come from this site."), 403)
    form = await _sign_in_form(request)
    if form is None:
        return html(dashboard_html.login_page("The sign-in form could not be read."), 400)
    secret = form.get("key")
    key = None
    if isinstance(secret, str) and 0 < len(secret.strip()) <= KEY_LENGTH_MAX:
        key = await request.app[KEYS].verify(secret.strip())
    if key is None or key.role not in (Role.FINANCE, Role.ADMIN):
        # Who tried is unknown (never the secret): the address and which key, when it was a valid one.
        refused = Actor(f"key:{key.id}" if key else "unknown", client_ip(request))
        async with request.app[POOL].acquire() as connection:
            await record(connection, refused, AuditAction.SIGN_IN_REFUSED, "dashboard")
        return html(dashboard_html.login_page("That is not a finance key."), 401)
    async with request.app[POOL].acquire() as connection, connection.transaction():
        token = await create_session(connection, key)
        await record(connection, actor(request, key), AuditAction.SIGNED_IN, "dashboard")
    response = redirect("/dashboard")
    response.set_cookie(
        COOKIE_NAME,
        token,
        max_age=int(SESSION_LIFETIME.total_seconds()),
        path="/dashboard",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    return response


@routes.post("/dashboard/logout")
async def logout(request: web.Request) -> web.Response:
    if not _same_origin(request):
        return html(dashboard_html.login_page("Sign-out must come from this site."), 403)
    token = request.cookies.get(COOKIE_NAME)
    if token:
        async with request.app[POOL].acquire() as connection, connection.transaction():
            session = await signed_in(request, connection)
            await connection.execute("DELETE FROM surge.dashboard_sessions WHERE token_hash = $1", _token_hash(token))
            if session is not None:
                await record(connection, actor(request, session.key), AuditAction.SIGNED_OUT, "dashboard")
    response = redirect("/dashboard/login")
    response.del_cookie(COOKIE_NAME, path="/dashboard")
    return response


@routes.get("/dashboard")
async def dashboard(request: web.Request) -> web.Response:
    try:
        span = Span(request.query.get("range", Span.HOUR.value))
    except ValueError:
        span = Span.HOUR  # a range the picker never offers: the default, not an error page
    session = await require_session(request)
    # One snapshot, so that the totals, the trial balance and the reconciliation agree with each other.
    async with (
        read_connection(request) as connection,
        connection.transaction(isolation="repeatable_read", readonly=True),
    ):
        campaign_report = await campaign_days(connection)
        trial_balance_report = await trial_balance(connection)
        last_run = await latest_run(connection)
        flows = await money_flows(connection, span)
        activity = dashboard_html.Activity(
            span, flows[Flow.CONTRIBUTIONS], flows[Flow.REFUNDS], flows[Flow.DISPUTES], await pace(connection)
        )
        open_exceptions = await open_exception_count(connection)
        needs = await attention(connection)
        refcodes = await refcode_totals(connection)
    return html(
        dashboard_html.dashboard_page(
            now=datetime.now(UTC),
            key_label=session.label,
            campaign_report=campaign_report,
            trial_balance_report=trial_balance_report,
            latest_run=last_run,
            activity=activity,
            open_exceptions=open_exceptions,
            attention=needs,
            refcode_report=refcodes,
        )
    )


AUDIT_PAGE_SIZE = 100


@routes.get("/dashboard/audit")
async def audit_trail(request: web.Request) -> web.Response:
    before = request.query.get("before")
    before_id = int(before) if before and before.isascii() and before.isdigit() and len(before) <= 18 else None
    session = await require_session(request)
    events = await read(request.app[POOL], limit=AUDIT_PAGE_SIZE, before_id=before_id)
    next_before = events[-1].id if len(events) == AUDIT_PAGE_SIZE else None
    return html(dashboard_html.audit_page(key_label=session.label, events=events, next_before=next_before))
