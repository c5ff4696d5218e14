"""The finance dashboard's recurring page: the recurring report per campaign, plans (pause, resume, cancel) and a
plan's periods with every attempt and outcome."""

from __future__ import annotations

from html import escape
from urllib.parse import urlencode

from aiohttp import web

from engine.api import dashboard_html as ui
from engine.api.dashboard import DashboardSession, html, redirect, require_form, require_session
from engine.api.state import POOL
from engine.recurring import plans, reports

routes = web.RouteTableDef()
ACTIONS = ("pause", "resume", "cancel")


def _header(session: DashboardSession, title: str) -> str:
    return (
        f"<header><h1>{escape(title)}</h1><span>signed in as {escape(session.label)}</span>"
        '<a href="/dashboard">Dashboard</a> <a href="/dashboard/recurring">Recurring</a> '
        '<a href="/dashboard/reports">Reports</a></header>'
    )


def _button(session: DashboardSession, plan_id: str, action: str) -> str:
    return (
        f'<form method="post" action="/dashboard/recurring/{escape(plan_id)}/{action}" style="display:inline">'
        f'<input type="hidden" name="csrf" value="{session.csrf}">'
        f'<button type="submit">{action.title()}</button></form>'
    )


@routes.get("/dashboard/recurring")
async def recurring_page(request: web.Request) -> web.Response:
    session = await require_session(request)
    status = request.query.get("status") or None
    pool = request.app[POOL]
    figures = await reports.by_campaign(pool)
    found = await plans.list_plans(pool, status=status, campaign=request.query.get("campaign") or None, limit=200)
    report = ui.table(
        [
            ("Campaign", False),
            ("Active plans", True),
            ("Past due", True),
            ("Paused", True),
            ("Monthly recurring", True),
            ("Succeeded", True),
            ("Failed", True),
            ("Skipped", True),
            ("Churn (30 days)", True),
        ],
        (
            [
                escape(f["campaign"]),
                str(f["active_plans"]),
                str(f["past_due_plans"]),
                str(f["paused_plans"]),
                ui.money(f["monthly_recurring_amount"], f["currency"].upper()),
                str(f["installments"]["succeeded"]),
                str(f["installments"]["failed"]),
                str(f["installments"]["skipped"]),
                "—" if f["churn_30_days"] is None else f"{f['churn_30_days']:.1%}",
            ]
            for f in figures
        ),
    )
    rows = []
    for plan in found:
        actions = [a for a in ACTIONS if (a == "resume") == (plan.status == "paused") or a == "cancel"]
        buttons = (
            " ".join(_button(session, plan.id, a) for a in actions) if plan.status in plans.OPEN_PLAN_STATUSES else ""
        )
        rows.append(
            [
                f'<a href="/dashboard/recurring/{escape(plan.id)}">{escape(plan.id)}</a>',
                escape(plan.campaign),
                escape(plan.donor_email),
                ui.money(plan.amount_minor, plan.currency),
                escape(plan.interval),
                escape(plan.status),
                escape(plan.cancel_reason or ""),
                buttons,
            ]
        )
    plan_table = ui.table(
        [
            ("Plan", False),
            ("Campaign", False),
            ("Donor", False),
            ("Amount", True),
            ("Every", False),
            ("Status", False),
            ("Reason", False),
            ("", False),
        ],
        rows,
    )
    notice = request.query.get("notice")
    body = (
        _header(session, "Recurring gifts")
        + "<main><section class='wide'>"
        + (f"<p>{escape(notice)}</p>" if notice else "")
        + f"<h2>By campaign</h2>{report}<h2>Plans</h2>"
        + '<form method="get"><label for="status">Status</label> <select id="status" name="status">'
        + "".join(
            f'<option value="{s}"{" selected" if s == (status or "") else ""}>{s or "all"}</option>'
            for s in ("", "active", "past_due", "paused", "cancelled", "completed")
        )
        + '</select> <button type="submit">Show</button></form>'
        + f"{plan_table}</section></main>"
    )
    return html(ui.page("Surge finance — recurring", body))


@routes.get("/dashboard/recurring/{id}")
async def plan_page(request: web.Request) -> web.Response:
    session = await require_session(request)
    plan = await plans.fetch_plan(request.app[POOL], request.match_info["id"])
    if plan is None:
        return html(ui.page("No such plan", '<p class="error">No such plan.</p>'), 404)
    periods = await reports.installments_of(request.app[POOL], plan.id)
    rows = [
        [
            str(p["period"]),
            escape(p["due"][:10]),
            ui.money(p["amount"], plan.currency),
            escape(p["status"]),
            escape(p["reason"] or ""),
            "<br>".join(
                escape(f"#{a['attempt']} {a['outcome']} {a['reason'] or ''} {a['donation'] or ''}")
                for a in p["attempts"]
            ),
        ]
        for p in periods
    ]
    table = ui.table(
        [("Period", True), ("Due", False), ("Amount", True), ("Status", False), ("Reason", False), ("Attempts", False)],
        rows,
    )
    card = f"{plan.brand or 'card'} •••• {plan.last4 or '????'} ({plan.exp_month}/{plan.exp_year})"
    summary = (
        f"<p>{escape(plan.donor_email)} — {ui.money(plan.amount_minor, plan.currency)} every {escape(plan.interval)}"
        f" — {escape(plan.status)} — {escape(card)}</p>"
    )
    body = _header(session, f"Plan {plan.id}") + f"<main><section class='wide'>{summary}{table}</section></main>"
    return html(ui.page(f"Surge finance — plan {plan.id}", body))


@routes.post(r"/dashboard/recurring/{id}/{action:(pause|resume|cancel)}")
async def plan_action(request: web.Request) -> web.Response:
    await require_form(request)
    plan_id, action = request.match_info["id"], request.match_info["action"]
    pool = request.app[POOL]
    if action == "cancel":
        outcome = await plans.cancel_plan(pool, plan_id, "cancelled_by_finance")
    else:
        outcome = await plans.pause_plan(pool, plan_id, paused=action == "pause")
    notice = f"Plan {plan_id}: {action} {'done' if outcome is plans.ChangeOutcome.CHANGED else outcome.value}"
    return redirect(f"/dashboard/recurring?{urlencode({'notice': notice})}")
