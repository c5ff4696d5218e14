"""The dashboard's finance work: run a reconciliation for a date range, resolve its exceptions (the proposed
adjusting entry, with a memo), and export every report for a date range and campaign as CSV.

Each action is the one the API and the CLI run (engine/finance/reconciliation.py, engine/finance/reports/catalog.py),
with the session's key as the actor in the audit trail; forms post the session's CSRF token.
"""

from __future__ import annotations

import re
from datetime import timedelta
from html import escape
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from engine.api import dashboard_html as ui
from engine.api.dashboard import DashboardSession, html, redirect, require_form, require_session
from engine.api.replica import read_connection
from engine.api.requests import actor
from engine.api.state import ACCOUNTS, POOL, PROCESSORS, SETTINGS
from engine.finance import reconciliation
from engine.finance.reconcile.adjustments import AdjustmentRefusedError, ExceptionNotFoundError, ExceptionNotOpenError
from engine.finance.reconcile.history import ExceptionStatus, list_exceptions, list_runs, run_view
from engine.finance.reconcile.model import Window
from engine.finance.reports.catalog import REPORTS, ReportQuery, build_report
from toolkit.times import day_start, parse_day

routes = web.RouteTableDef()

WINDOW_DAYS_MAX = 93


def _header(session: DashboardSession, title: str) -> str:
    return (
        f"<header><h1>{escape(title)}</h1><span>signed in as {escape(session.label)}</span>"
        '<a href="/dashboard">Dashboard</a> <a href="/dashboard/reconciliations">Reconciliations</a> '
        '<a href="/dashboard/reports">Reports</a></header>'
    )


@routes.get("/dashboard/reconciliations")
async def reconciliations_page(request: web.Request) -> web.Response:
    session = await require_session(request)
    async with read_connection(request) as connection:
        runs = await list_runs(connection, limit=20)
        open_exceptions = await list_exceptions(connection, status=ExceptionStatus.OPEN)
    processors = "".join(
        f'<option value="{escape(p.name)}">{escape(p.name)}</option>' for p, _ in request.app[PROCESSORS]
    )
    notice = request.query.get("notice", "")[:300]
    message = f'<p class="ok" role="status" id="notice">{escape(notice)}</p>' if notice else ""
    form = (
        '<form method="post" action="/dashboard/reconciliations" id="run-form">'
        f'<input type="hidden" name="csrf" value="{session.csrf}">'
        f'<label for="processor">Processor</label> <select id="processor" name="processor">{processors}</select> '
        '<label for="from">From</label> <input id="from" name="from" type="date" required> '
        '<label for="to">To (inclusive)</label> <input id="to" name="to" type="date" required> '
        '<button type="submit" id="run">Reconcile</button></form>'
    )
    run_rows = [
        (
            f'<a href="/dashboard/reconciliations/{run.id}">#{run.id}</a>',
            escape(run.processor),
            escape(f"{ui.time_text(run.window_from)} to {ui.time_text(run.window_to)}"),
            str(run.matched),
            str(run.exception_count),
            escape(run.requested_by),
        )
        for run in runs
    ]
    headers = [("Run", False), ("Processor", False), ("Window", False), ("Matched", True), ("Exceptions", True)]
    body = (
        _header(session, "Reconciliations")
        + f"<main>{message}"
        + f'<section class="wide" id="run-reconciliation"><h2>Run a reconciliation</h2>{form}</section>'
        + '<section class="wide" id="open-exceptions-list"><h2>Open exceptions</h2>'
        + (_exceptions_with_forms(open_exceptions, session) or '<p class="ok">None open.</p>')
        + "</section>"
        + f'<section class="wide" id="runs"><h2>Runs</h2>{ui.table([*headers, ("By", False)], run_rows)}</section>'
        + "</main>"
    )
    return html(ui.page("Surge finance — reconciliations", body))


def _exceptions_with_forms(exceptions: list[Any], session: DashboardSession) -> str:
    items = []
    for x in exceptions:
        proposal = x.detail.get("proposal_note") or ""
        items.append(
            f'<li id="exception-{x.id}"><strong>#{x.id}</strong> {escape(x.kind.value)} — {escape(x.subject)}: '
            f"processor {ui.money(x.processor_amount, x.currency)}, ledger {ui.money(x.ledger_amount, x.currency)}"
            f"{' — ' + escape(str(proposal)) if proposal else ''}"
            f'<form method="post" action="/dashboard/exceptions/{x.id}/resolve">'
            f'<input type="hidden" name="csrf" value="{session.csrf}">'
            f'<label for="memo-{x.id}">Memo</label> <input id="memo-{x.id}" name="memo" required maxlength="500"> '
            f'<button type="submit" id="resolve-{x.id}">Resolve with the proposed entry</button></form></li>'
        )
    return f"<ul>{''.join(items)}</ul>" if items else ""


@routes.post("/dashboard/reconciliations")
async def run_reconciliation(request: web.Request) -> web.Response:
    session, form = await require_form(request)
    kinds = dict(request.app[SETTINGS].processor_specs())
    processor = next((p for p, _ in request.app[PROCESSORS] if p.name == form.get("processor")), None)
    try:
        start, end = parse_day(str(form.get("from", ""))), parse_day(str(form.get("to", "")))
        window = Window(day_start(start), day_start(end + timedelta(days=1)))
    except ValueError as error:
        return _back(f"Not run: {error}")
    if processor is None:
        return _back("Not run: no such processor")
    if end - start > timedelta(days=WINDOW_DAYS_MAX):
        return _back(f"Not run: a window is at most {WINDOW_DAYS_MAX} days")
    try:
        run_id = await reconciliation.run_reconciliation(
            request.app[POOL],
            processor,
            kinds.get(processor.name, ""),
            window,
            f"key:{session.key.id}",
            actor(request, session.key),
        )
    except reconciliation.ProcessorReadError as error:
        return _back(f"Not run: {error}")
    return redirect(f"/dashboard/reconciliations/{run_id}")


@routes.get(r"/dashboard/reconciliations/{id:\d{1,18}}")
async def run_page(request: web.Request) -> web.Response:
    session = await require_session(request)
    async with request.app[POOL].acquire() as connection:
        run = await run_view(connection, int(request.match_info["id"]))
    if run is None:
        return html(ui.page("Not found", _header(session, "No such reconciliation")), 404)
    still_open = [x for x in run.exceptions if x.status is ExceptionStatus.OPEN]
    body = (
        _header(session, f"Reconciliation #{run.id}")
        + f'<main><section class="wide" id="reconciliation">{ui.reconciliation(run)}</section>'
        + (
            f'<section class="wide" id="open-exceptions-list"><h2>Resolve</h2>'
            f"{_exceptions_with_forms(still_open, session)}</section>"
            if still_open
            else ""
        )
        + "</main>"
    )
    return html(ui.page(f"Reconciliation #{run.id}", body))


@routes.post(r"/dashboard/exceptions/{id:\d{1,18}}/resolve")
async def resolve_exception(request: web.Request) -> web.Response:
    exception_id = int(request.match_info["id"])
    session, form = await require_form(request)
    async with request.app[POOL].acquire() as connection:
        memo = str(form.get("memo", "")).strip()[:500]
        try:
            adjustment = await reconciliation.resolve(
                connection,
                request.app[ACCOUNTS],
                exception_id,
                memo=memo,
                resolved_by=f"key:{session.key.id}",
                actor=actor(request, session.key),
            )
        except ExceptionNotFoundError:
            return _back(f"No exception #{exception_id}")
        except (ExceptionNotOpenError, AdjustmentRefusedError, reconciliation.LegsInvalidError, ValueError) as error:
            return _back(f"Exception #{exception_id} not resolved: {error}")
    return _back(f"Exception #{exception_id} resolved with entry {adjustment.entry_reference}")


def _back(notice: str) -> web.Response:
    return redirect(f"/dashboard/reconciliations?{urlencode({'notice': notice})}")


@routes.get("/dashboard/reports")
async def reports_page(request: web.Request) -> web.Response:
    session = await require_session(request)
    options = "".join(
        f'<option value="{name}">{escape(name)} — {escape(description)}</option>'
        for name, (description, _) in REPORTS.items()
    )
    form = (
        '<form method="get" action="/dashboard/reports/export" id="export-form">'
        f'<label for="report">Report</label> <select id="report" name="report">{options}</select> '
        '<label for="campaign">Campaign</label> <input id="campaign" name="campaign" placeholder="all"> '
        '<label for="from">From</label> <input id="from" name="from" type="date"> '
        '<label for="to">To (inclusive)</label> <input id="to" name="to" type="date"> '
        '<button type="submit" id="export">Download CSV</button></form>'
        '<p class="muted">Dates are whole UTC days; the trial balance is as of the end of "To" (or now).</p>'
    )
    return html(
        ui.page(
            "Surge finance — reports",
            _header(session, "Reports") + f"<main><section class='wide'>{form}</section></main>",
        )
    )


@routes.get("/dashboard/reports/export")
async def export_report(request: web.Request) -> web.Response:
    session = await require_session(request)
    async with read_connection(request) as connection:
        name = request.query.get("report", "")
        if name not in REPORTS:
            return html(ui.page("Not found", _header(session, "No such report")), 404)
        try:
            start = parse_day(request.query["from"]) if request.query.get("from") else None
            end = parse_day(request.query["to"]) if request.query.get("to") else None
        except ValueError as error:
            return html(
                ui.page("Reports", _header(session, "Reports") + f"<p class='error'>{escape(str(error))}</p>"), 400
            )
        query = ReportQuery(
            campaign=request.query.get("campaign") or None,
            date_from=start,
            date_to=end,
            as_of=day_start(end + timedelta(days=1)) if end else None,
        )
        report = await build_report(connection, name, query)
    parts = [name, query.campaign or "", str(start or ""), str(end or "")]
    filename = re.sub(r"[^A-Za-z0-9._-]", "_", "-".join(part for part in parts if part)) + ".csv"
    return web.Response(
        text=report.as_csv(),
        content_type="text/csv",
        charset="utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )
