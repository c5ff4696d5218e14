"""The dashboard's donations: find one (engine/finance/search.py), read everything about it
(engine/finance/donation_record.py) and refund it — with a confirmation step, the API's idempotency and its audit
record (engine/payments/refund_requests.py).

Forms post back this session's CSRF token (engine/api/dashboard.py) on top of the SameSite=Strict cookie and the
Origin check. The refund's idempotency key is made when the confirmation page is rendered, so a double click or a
reload of the confirmation makes one refund.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from html import escape
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from adapters.base import ChargeResult
from engine.api import dashboard_html as ui
from engine.api.dashboard import DashboardSession, html, redirect, require_form, require_session
from engine.api.replica import read_connection
from engine.api.requests import actor
from engine.api.state import ACCOUNTS, POOL, PROCESSORS, SETTINGS
from engine.finance.donation_record import DonationRecord, donation_record, processor_record
from engine.finance.search import DonationSearch, search_donations
from engine.keys import Role
from engine.payments.refund_requests import request_refund
from engine.payments.refunds import RefundRefusedError
from ledger.currencies import format_minor, parse_major
from toolkit.times import day_start, parse_day

routes = web.RouteTableDef()

PAGE_SIZE = 50


def _search_from(query: Any) -> tuple[DonationSearch, list[str]]:
    """The search the form asked for, and what in it could not be read (said on the page, never a 500)."""
    problems = []

    def day(name: str) -> Any:
        raw = query.get(name, "").strip()
        if not raw:
            return None
        try:
            return parse_day(raw)
        except ValueError:
            problems.append(f"{name} must be a date (YYYY-MM-DD)")
            return None

    amount_minor = None
    raw_amount = query.get("amount", "").strip()
    if raw_amount:
        try:
            amount_minor = parse_major(raw_amount, query.get("currency", "USD") or "USD")
        except ValueError:
            problems.append("amount must be an amount such as 25 or 25.00")
    start, end = day("from"), day("to")
    return (
        DonationSearch(
            text=query.get("q", "").strip()[:200] or None,
            campaign=query.get("campaign", "").strip() or None,
            refcode=query.get("refcode", "").strip()[:64] or None,
            amount_minor=amount_minor,
            created_from=day_start(start) if start else None,
            created_to=day_start(end + timedelta(days=1)) if end else None,
        ),
        problems,
    )


@routes.get("/dashboard/donations")
async def find_donations(request: web.Request) -> web.Response:
    search, problems = _search_from(request.query)
    after = request.query.get("after") or None
    session = await require_session(request)
    async with read_connection(request) as connection:
        page = await search_donations(connection, search, limit=PAGE_SIZE, after=after) if not problems else None
    rows = [
        (
            f'<a href="/dashboard/donations/{escape(d.id)}">{escape(d.id)}</a>',
            escape(ui.time_text(d.created_at)),
            escape(f"{d.donor.get('first_name', '')} {d.donor.get('last_name', '')}"),
            escape(str(d.donor.get("email", ""))),
            escape(d.campaign),
            ui.money(d.amount_minor, d.currency),
            escape(d.api_status),
        )
        for d in (page.donations if page else [])
    ]
    headers = [("Donation", False), ("When", False), ("Donor", False), ("Email", False), ("Campaign", False)]
    found = ui.table([*headers, ("Amount", True), ("Status", False)], rows) if rows else ""
    if page is not None and not rows:
        found = '<p class="muted" id="no-results">No donation matches.</p>'
    more = ""
    if page is not None and page.next_after:
        following = urlencode({**{k: v for k, v in request.query.items() if k != "after"}, "after": page.next_after})
        more = f'<p><a id="next-page" href="/dashboard/donations?{escape(following)}">Next page</a></p>'
    errors = "".join(f'<p class="error" role="alert">{escape(p)}</p>' for p in problems)
    body = (
        _header(session, "Donations")
        + '<main><section class="wide" id="donation-search">'
        + _search_form(request.query)
        + errors
        + found
        + more
        + "</section></main>"
    )
    return html(ui.page("Surge finance — donations", body))


def _header(session: DashboardSession, title: str) -> str:
    return (
        f"<header><h1>{escape(title)}</h1><span>signed in as {escape(session.label)}</span>"
        '<a href="/dashboard">Dashboard</a> <a href="/dashboard/donations">Donations</a></header>'
    )


def _search_form(query: Any) -> str:
    def field(name: str, label: str, kind: str = "text") -> str:
        value = escape(query.get(name, ""))
        return f'<label for="{name}">{label}</label> <input id="{name}" name="{name}" type="{kind}" value="{value}">'

    return (
        '<form method="get" action="/dashboard/donations" class="search">'
        + field("q", "Search (id, email, name, postal code, processor reference)", "search")
        + field("campaign", "Campaign")
        + field("refcode", "Refcode")
        + field("amount", "Amount")
        + field("from", "From", "date")
        + field("to", "To", "date")
        + '<button type="submit" id="search">Find</button></form>'
    )


@routes.get("/dashboard/donations/{id}")
async def donation_page(request: web.Request) -> web.Response:
    session = await require_session(request)
    async with request.app[POOL].acquire() as connection:
        record = await donation_record(connection, request.match_info["id"])
    if record is None:
        return html(ui.page("Not found", _header(session, "No such donation")), 404)
    told = await processor_record([p for p, _ in request.app[PROCESSORS]], record.donation)
    notice = request.query.get("notice", "")[:300]
    return html(
        ui.page(
            f"Donation {record.donation.id}", _header(session, "Donation") + _record_html(record, told, session, notice)
        )
    )


def _receipts_html(record: DonationRecord) -> str:
    rows = [
        (
            escape(r["kind"] + (f" {r['refund_id']}" if r["refund_id"] else "")),
            escape(r["recipient"]),
            escape(r["status"] + (f": {r['last_error']}" if r["status"] != "sent" and r["last_error"] else "")),
            escape(ui.time_text(r["sent_at"]) if r["sent_at"] else f"{r['attempts']} attempt(s)"),
            escape(r["message_id"] or "—"),
        )
        for r in record.receipts
    ]
    if not rows:
        return '<p class="muted">None: a receipt is written when a gift succeeds or a refund is booked.</p>'
    return ui.table(
        [("Receipt", False), ("To", False), ("Status", False), ("Sent", False), ("Message-ID", False)], rows
    )


def _processor_html(told: ChargeResult | str) -> str:
    if isinstance(told, str):
        return f'<p class="muted">{escape(told)}</p>'
    amount = ui.money(told.amount.amount_minor, told.amount.currency) if told.amount else "—"
    fee = ui.money(told.fee.amount_minor, told.fee.currency) if told.fee else "—"
    return (
        f"<p>{escape(told.status.value)} · {escape(told.processor_reference or '—')} · amount {amount} · fee {fee}"
        f"{' · ' + escape(told.decline_code) if told.decline_code else ''}</p>"
    )


def _record_html(record: DonationRecord, told: ChargeResult | str, session: DashboardSession, notice: str) -> str:
    d = record.donation
    donor = d.donor
    facts = [
        ("Donation", escape(d.id)),
        ("Status", escape(d.api_status)),
        ("Amount", ui.money(d.amount_minor, d.currency)),
        ("Fee", ui.money(d.fee_minor, d.currency) if d.fee_minor is not None else "—"),
        ("Refunded", ui.money(d.refunded_minor, d.currency)),
        ("Disputed", ui.money(d.disputed_minor, d.currency)),
        ("Campaign", escape(f"{d.campaign} ({d.election})" + (f", refcode {d.refcode}" if d.refcode else ""))),
        ("Donor", escape(f"{donor.get('first_name', '')} {donor.get('last_name', '')} <{donor.get('email', '')}>")),
        (
            "Address",
            escape(", ".join(str(donor.get(k, "")) for k in ("address_line1", "city", "state", "postal_code"))),
        ),
        ("Employer / occupation", escape(f"{donor.get('employer') or '—'} / {donor.get('occupation') or '—'}")),
        ("Processor", escape(f"{d.processor or '—'} {d.processor_reference or ''}")),
        ("Decline", escape(d.decline_code or d.failure_message or "—")),
    ]
    facts_html = "".join(f"<tr><th>{label}</th><td>{value}</td></tr>" for label, value in facts)
    history = ui.table(
        [("When", False), ("What", False)], [(escape(ui.time_text(m.at)), escape(m.what)) for m in record.history]
    )
    entries = [
        (escape(entry.reference), escape(p.account), ui.money(p.amount, p.currency))
        for entry in record.entries
        for p in entry.postings
    ]
    ledger = ui.table([("Entry", False), ("Account", False), ("Amount (debit +)", True)], entries) if entries else ""
    refunds = [
        (
            escape(r["id"]),
            ui.money(r["amount_minor"], r["currency"].strip()),
            escape(r["status"] + (" (returned)" if r["returned_at"] else "")),
            escape(r["processor_reference"] or "—"),
        )
        for r in record.refunds
    ]
    refunds_html = ui.table([("Refund", False), ("Amount", True), ("Status", False), ("Processor", False)], refunds)
    refundable = (
        d.amount_minor
        - d.refunded_minor
        - d.disputed_minor
        - sum(r["amount_minor"] for r in record.refunds if r["status"] in ("refunding", "pending"))
    )
    form = ""
    if d.status == "succeeded" and refundable > 0 and session.key.role in (Role.FINANCE, Role.ADMIN):
        form = (
            f'<form method="post" action="/dashboard/donations/{escape(d.id)}/refund" id="refund-form">'
            f'<input type="hidden" name="csrf" value="{session.csrf}">'
            f'<label for="refund-amount">Refund amount (up to {ui.money(refundable, d.currency)})</label> '
            f'<input id="refund-amount" name="amount" inputmode="decimal" required> '
            '<button type="submit" id="refund">Refund…</button></form>'
        )
    message = f'<p class="ok" role="status" id="notice">{escape(notice)}</p>' if notice else ""
    return (
        f'<main>{message}<section id="donation-facts"><h2>Donation</h2><table>{facts_html}</table></section>'
        f'<section id="donation-history"><h2>History</h2>{history}</section>'
        f'<section id="processor-record"><h2>The processor\'s record</h2>{_processor_html(told)}</section>'
        f'<section id="donation-refunds"><h2>Refunds</h2>{refunds_html if refunds else "<p>None.</p>"}{form}</section>'
        f'<section class="wide" id="donation-ledger"><h2>Ledger entries</h2>{ledger}</section>'
        f'<section class="wide" id="donation-receipts"><h2>Receipts</h2>{_receipts_html(record)}</section></main>'
    )


@routes.post("/dashboard/donations/{id}/refund")
async def refund(request: web.Request) -> web.Response:
    """First post: a confirmation page naming the amount, with the refund's idempotency key; second post
    (``confirm``): the refund, made as the API makes it."""
    donation_id = request.match_info["id"]
    session, form = await require_form(request)
    async with request.app[POOL].acquire() as connection:
        record = await donation_record(connection, donation_id)
    if record is None:
        return html(ui.page("Not found", _header(session, "No such donation")), 404)
    currency = record.donation.currency
    try:
        amount_minor = parse_major(str(form.get("amount", "")), currency)
    except ValueError:
        return _back(donation_id, f"{form.get('amount', '')!s:.40} is not an amount in {currency}")
    if form.get("confirm") != "yes":
        return html(
            ui.page(
                "Confirm the refund",
                _header(session, "Confirm the refund") + _confirmation(record, amount_minor, session),
            )
        )
    key = str(form.get("idempotency_key", ""))[:100]
    try:
        made = await request_refund(
            request.app[POOL],
            request.app[ACCOUNTS],
            [processor for processor, _ in request.app[PROCESSORS]],
            api_key_id=session.key.id,
            idempotency_key=key or secrets.token_hex(16),
            donation_id=donation_id,
            amount_minor=amount_minor,
            timeout_s=request.app[SETTINGS].charge_timeout_ms / 1000,
            actor=actor(request, session.key),
        )
    except RefundRefusedError as error:
        return _back(donation_id, f"Refund refused: {error.refusal.value.replace('_', ' ')}")
    return _back(donation_id, f"Refund {made.id}: {ui.money_text(made.amount_minor, made.currency)} {made.status}")


def _confirmation(record: DonationRecord, amount_minor: int, session: DashboardSession) -> str:
    d = record.donation
    key = "dash_" + secrets.token_hex(12)  # made now: a second click or a reload repeats this refund, never adds one
    return (
        '<main><section class="wide" id="refund-confirmation">'
        f"<p>Refund <strong>{ui.money(amount_minor, d.currency)}</strong> of donation {escape(d.id)} "
        f"({ui.money(d.amount_minor, d.currency)} from {escape(str(d.donor.get('email', '')))})? "
        "The processor returns it to the donor's card.</p>"
        f'<form method="post" action="/dashboard/donations/{escape(d.id)}/refund">'
        f'<input type="hidden" name="csrf" value="{session.csrf}">'
        f'<input type="hidden" name="amount" value="{escape(format_minor(amount_minor, d.currency))}">'
        f'<input type="hidden" name="idempotency_key" value="{key}">'
        '<input type="hidden" name="confirm" value="yes">'
        '<button type="submit" id="confirm-refund">Refund now</button> '
        f'<a href="/dashboard/donations/{escape(d.id)}">Cancel</a></form></section></main>'
    )


def _back(donation_id: str, notice: str) -> web.Response:
    return redirect(f"/dashboard/donations/{donation_id}?{urlencode({'notice': notice})}")
