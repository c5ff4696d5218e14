"""The finance dashboard's pages: plain server-rendered HTML with inline CSS and SVG — no script, nothing fetched.

Every value that came from the database or the request goes through :func:`html.escape`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

from engine.audit import AuditEvent
from engine.finance.attention import Attention
from engine.finance.reconcile.history import ExceptionView, RunView
from engine.finance.reports.donation_series import Bucket, Pace, Span, currency_totals
from engine.finance.reports.report import Report
from ledger.currencies import format_minor, minor_unit_exponent
from toolkit.svg_chart import CHART_CSS, Series, render_chart

STYLE = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1c2430;background:#f4f6f9}
header{background:#1c2f4a;color:#fff;padding:.8rem 1.5rem;display:flex;align-items:center;gap:1rem}
header h1{font-size:1.15rem;margin:0;flex:1}
header form{margin:0}
main{padding:1rem 1.5rem;display:grid;gap:1rem;grid-template-columns:repeat(auto-fit,minmax(30rem,1fr))}
section{background:#fff;border:1px solid #d8dee8;border-radius:6px;padding:.8rem 1rem;overflow-x:auto}
section.wide{grid-column:1/-1}
h2{font-size:1rem;margin:.2rem 0 .6rem}
table{border-collapse:collapse;width:100%}
th,td{padding:.25rem .5rem;border-bottom:1px solid #e6eaf0;text-align:left;white-space:nowrap}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tfoot td{font-weight:600;border-top:2px solid #1c2430}
.ok{color:#13795b}.bad{color:#b42318}.muted{color:#667085}
.tag{display:inline-block;padding:0 .4rem;border-radius:3px;background:#eef2f7;font-size:.85em}
.tag.open{background:#fde2e1;color:#b42318}.tag.resolved{background:#dcf5ea;color:#13795b}
.tag.cleared{background:#e8eefb;color:#344e86}
button{font:inherit;padding:.35rem .9rem;border-radius:4px;border:1px solid #8da2c0;background:#fff;cursor:pointer}
.login{max-width:24rem;margin:10vh auto;background:#fff;border:1px solid #d8dee8;border-radius:6px;padding:1.5rem}
.login input{width:100%;box-sizing:border-box;font:inherit;padding:.45rem;margin:.4rem 0 1rem}
.error{color:#b42318}
nav a,header a{color:inherit;margin-right:.6rem}
form label{margin-right:.2rem}form input,form select{font:inherit;padding:.3rem;margin:.2rem .6rem .2rem 0}
@media (max-width:640px){header{flex-wrap:wrap;padding:.6rem .8rem}main{grid-template-columns:1fr;padding:.5rem}
section{padding:.6rem}form input,form select{width:100%;box-sizing:border-box}}
""" + CHART_CSS.lstrip("\n")


def page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def login_page(error: str | None = None) -> str:
    message = f'<p class="error" id="login-error">{escape(error)}</p>' if error else ""
    return page(
        "Surge finance — sign in",
        '<form class="login" method="post" action="/dashboard/login">'
        "<h1>Surge finance dashboard</h1>"
        f"{message}"
        '<label for="key">Finance API key</label>'
        '<input id="key" name="key" type="password" autocomplete="off" required autofocus>'
        '<button type="submit" id="sign-in">Sign in</button>'
        '<p class="muted">The key is exchanged for a session cookie and is not kept by the browser.</p>'
        "</form>",
    )


def money(amount: int | None, currency: str | None) -> str:
    """An amount in its currency's own decimals (ISO 4217: 3 for BHD, 0 for JPY), with the code after it."""
    if amount is None:
        return '<span class="muted">—</span>'
    if not currency:  # no currency, no decimals to place: the raw minor units, said plainly
        return f'<span class="muted">{amount} minor units, currency unknown</span>'
    return escape(money_text(amount, currency))


def money_text(amount: int, currency: str) -> str:
    return f"{format_minor(amount, currency)} {currency}"


def table(
    headers: Sequence[tuple[str, bool]], rows: Iterable[Sequence[str]], footer: Sequence[str] | None = None
) -> str:
    """``headers`` are (label, numeric); cells are HTML already escaped."""
    head = "".join(f'<th class="n">{escape(h)}</th>' if n else f"<th>{escape(h)}</th>" for h, n in headers)
    numeric = [n for _, n in headers]

    def cells(row: Sequence[str]) -> str:
        return "".join(f'<td class="n">{c}</td>' if n else f"<td>{c}</td>" for c, n in zip(row, numeric, strict=True))

    body = "".join(f"<tr>{cells(row)}</tr>" for row in rows)
    foot = f"<tfoot><tr>{cells(footer)}</tr></tfoot>" if footer else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>{foot}</table>"


def campaign_totals(report: Report) -> str:
    rows = []
    for campaign, by_currency in sorted(report.totals.items()):
        for currency, t in sorted(by_currency.items()):
            rows.append(
                [
                    escape(campaign),
                    str(t["donations"]),
                    money(t["gross"], currency),
                    money(t["refunds"], currency),
                    money(t["disputes"], currency),
                    money(t["fees"], currency),
                    f"<strong>{money(t['net'], currency)}</strong>",
                ]
            )
    if not rows:
        return '<p class="muted" id="no-campaign-activity">No contributions posted yet.</p>'
    headers = [
        ("Campaign", False),
        ("Donations", True),
        ("Gross", True),
        ("Refunds", True),
        ("Disputes", True),
        ("Fees", True),
        ("Net", True),
    ]
    return table(headers, rows)


REFCODE_ROWS_SHOWN = 50


def refcode_table(report: Report | None) -> str:
    """What each donation-page link (``?refcode=``) brought in: the top rows; all of them in /v1/reports/refcodes."""
    if report is None or not report.rows:
        return '<p class="muted" id="no-refcodes">No donations with a refcode yet.</p>'
    rows = [
        [
            escape(row["campaign"]),
            escape(row["refcode"]),
            str(row["donations"]),
            money(row["gross"], row["currency"]),
            money(row["refunds"] + row["disputes"], row["currency"]),
            f"<strong>{money(row['net'], row['currency'])}</strong>",
            str(row["declined"]),
        ]
        for row in report.rows[:REFCODE_ROWS_SHOWN]
    ]
    headers = [
        ("Campaign", False),
        ("Refcode", False),
        ("Donations", True),
        ("Gross", True),
        ("Refunds and disputes", True),
        ("Net", True),
        ("Declined", True),
    ]
    return table(headers, rows)


def trial_balance(report: Report) -> str:
    rows = [
        [
            escape(r["account"]),
            escape(r["type"]),
            money(r["debit"], r["currency"]) if r["debit"] else "",
            money(r["credit"], r["currency"]) if r["credit"] else "",
        ]
        for r in report.rows
        if r["debit"] or r["credit"]
    ]
    checks = []
    for currency, t in sorted(report.totals.items()):
        verdict = '<span class="ok">balanced</span>' if t["balanced"] else '<span class="bad">NOT BALANCED</span>'
        checks.append(
            f"<li>{escape(currency)}: debits {money(t['debit'], currency)}, "
            f"credits {money(t['credit'], currency)} — {verdict}</li>"
        )
    if not rows:
        balances = '<p class="muted" id="empty-ledger">The ledger has no posted balances yet.</p>'
    else:
        balances = table([("Account", False), ("Type", False), ("Debit", True), ("Credit", True)], rows)
    return balances + (f'<ul id="trial-balance-totals">{"".join(checks)}</ul>' if checks else "")


def _status(view: ExceptionView) -> str:
    return f'<span class="tag {view.status.value}">{escape(view.status.value)}</span>'


def reconciliation(run: RunView | None) -> str:
    if run is None:
        return '<p class="muted" id="no-reconciliation">No reconciliation has been run yet.</p>'
    verdict = (
        '<span class="ok">no exceptions</span>'
        if not run.exceptions
        else f'<span class="bad">{len(run.exceptions)} exception{"s" if len(run.exceptions) != 1 else ""}</span>'
    )
    head = (
        f'<p id="latest-run">Run #{run.id} of <strong>{escape(run.processor)}</strong> for '
        f"{_time(run.window_from)} to {_time(run.window_to)}, by {escape(run.requested_by)} at "
        f"{_time(run.finished_at)}: {run.matched} matched, {verdict}.</p>"
    )
    totals = []
    for currency, t in sorted(run.summary.items()):
        totals.append(
            [
                escape(currency),
                money(t["processor_payouts"], currency),
                money(t["ledger_payouts"], currency),
                money(t["processor_net_movement"], currency),
                money(t["ledger_clearing_movement"], currency),
            ]
        )
    summary = (
        table(
            [
                ("Currency", False),
                ("Payouts (processor)", True),
                ("Payouts (ledger)", True),
                ("Net movement (processor)", True),
                ("Clearing movement (ledger)", True),
            ],
            totals,
        )
        if totals
        else ""
    )
    rows = [
        [
            f"#{x.id}",
            _status(x),
            escape(x.kind.value),
            escape(x.subject),
            money(x.processor_amount, x.currency),
            money(x.ledger_amount, x.currency),
            money(x.difference, x.currency),
            escape(x.adjustment.memo) if x.adjustment else "",
        ]
        for x in run.exceptions
    ]
    exceptions = (
        table(
            [
                ("Id", False),
                ("Status", False),
                ("Kind", False),
                ("Subject", False),
                ("Processor", True),
                ("Ledger", True),
                ("Difference", True),
                ("Memo", False),
            ],
            rows,
        )
        if rows
        else ""
    )
    return head + summary + (f'<div id="exceptions"><h2>Exceptions</h2>{exceptions}</div>' if exceptions else "")


def time_text(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z")


def _time(moment: datetime) -> str:
    return escape(time_text(moment))


def _bucket_label(bucket: Bucket, span: Span) -> str:
    return f"{bucket.start:%H:%M}" if span in (Span.HOUR, Span.DAY) else f"{bucket.start:%m-%d}"


def _bars_chart(
    title: str, series: Sequence[Bucket], span: Span, values: Sequence[float], tooltips: Sequence[str], chart_id: str
) -> str:
    def tick(index: float) -> str:
        whole = int(index)
        return _bucket_label(series[whole], span) if whole == index and 0 <= whole < len(series) else ""

    bars = Series(title, [(float(i), v) for i, v in enumerate(values)], color="#3b6fb6", bars=True, tooltips=tooltips)
    unit = span.bucket[0]
    return render_chart(
        title, [bars], x_label=f"{unit} (UTC)", y_label="", width=720, height=200, chart_id=chart_id, x_tick_label=tick
    )


def donations_chart(series: Sequence[Bucket], span: Span = Span.HOUR) -> str:
    """Bars of posted donations per bucket (a count), each bucket's amounts per currency in its tooltip; then one
    chart of the amount per currency and one figure per currency below: amounts in different currencies are never
    added up."""
    unit = span.bucket[0]
    tooltips = [
        f"{_bucket_label(bucket, span)} UTC: {bucket.entries} donations"
        + "".join(f", {money_text(amount, currency)}" for currency, amount in sorted(bucket.amounts.items()))
        for bucket in series
    ]
    chart = _bars_chart(
        f"Donations per {unit}, last {span.value}",
        series,
        span,
        [bucket.entries for bucket in series],
        tooltips,
        "donations-chart",
    )
    totals = currency_totals(list(series))
    for currency in totals:
        exponent = minor_unit_exponent(currency)
        amounts = [bucket.amounts.get(currency, 0) / 10**exponent for bucket in series]  # chart heights only
        chart += _bars_chart(
            f"Amount per {unit} ({currency})",
            series,
            span,
            amounts,
            [f"{_bucket_label(b, span)} UTC: {money_text(b.amounts.get(currency, 0), currency)}" for b in series],
            f"amount-chart-{currency.lower()}",
        )
    total = sum(bucket.entries for bucket in series)
    caption = f'<p class="muted">{total} donations in the last {span.value} (UTC).</p>'
    figures = "".join(
        f'<li data-currency="{escape(currency)}">{escape(currency)}: {count} donation{"" if count == 1 else "s"}, '
        f"<strong>{money(amount, currency)}</strong></li>"
        for currency, (count, amount) in totals.items()
    )
    return chart + caption + (f'<ul id="donations-per-currency">{figures}</ul>' if figures else "")


def refunds_disputes_chart(refunds: Sequence[Bucket], disputes: Sequence[Bucket], span: Span) -> str:
    unit = span.bucket[0]

    def tooltips(kind: str, series: Sequence[Bucket]) -> list[str]:
        return [
            f"{_bucket_label(b, span)} UTC: {b.entries} {kind}"
            + "".join(f", {money_text(a, c)}" for c, a in sorted(b.amounts.items()))
            for b in series
        ]

    def tick(index: float) -> str:
        whole = int(index)
        return _bucket_label(refunds[whole], span) if whole == index and 0 <= whole < len(refunds) else ""

    lines = [
        Series(
            "refunds", [(float(i), b.entries) for i, b in enumerate(refunds)], tooltips=tooltips("refunds", refunds)
        ),
        Series(
            "disputes", [(float(i), b.entries) for i, b in enumerate(disputes)], tooltips=tooltips("disputes", disputes)
        ),
    ]
    chart = render_chart(
        f"Refunds and disputes per {unit}, last {span.value}",
        lines,
        x_label=f"{unit} (UTC)",
        y_label="count",
        width=720,
        height=180,
        chart_id="refunds-disputes-chart",
        x_tick_label=tick,
    )
    figures = []
    for kind, series in (("refunds", refunds), ("disputes", disputes)):
        for currency, (count, amount) in currency_totals(list(series)).items():
            figures.append(
                f"<li>{kind}: {count} in {escape(currency)}, <strong>{money(amount, currency)}</strong></li>"
            )
    return chart + (f'<ul id="refunds-disputes-totals">{"".join(figures)}</ul>' if figures else "")


@dataclass(frozen=True, slots=True)
class Activity:
    """What the dashboard charts: the chosen span's donations, refunds and disputes, and the pace now."""

    span: Span
    donations: Sequence[Bucket]
    refunds: Sequence[Bucket]
    disputes: Sequence[Bucket]
    pace: Pace


def pace_note(now_pace: Pace) -> str:
    return (
        f'<p id="pace">Queue now: <strong>{now_pace.queued}</strong> waiting for the processor, '
        f"{now_pace.in_flight} being charged or awaiting the processor; "
        f"processor rate over the last minute: <strong>{now_pace.charges_per_second:.1f}</strong> charges/s.</p>"
    )


def span_picker(span: Span) -> str:
    current = ' aria-current="page"'
    links = " ".join(f'<a href="/dashboard?range={s.value}"{current if s is span else ""}>{s.value}</a>' for s in Span)
    return f'<nav id="range-picker" aria-label="Range">Show the last: {links}</nav>'


def attention_note(attention: Attention) -> str:
    """Donations and refunds the processor never decided, refunds it returned and webhook events waiting to apply
    (engine/finance/attention.py)."""
    if not attention.total and not attention.events_parked:
        return '<span class="ok" id="attention">nothing waiting</span>'
    parts = []
    if attention.donations_needing_review:
        count = attention.donations_needing_review
        parts.append(f"{count} donation{'s' if count != 1 else ''} the processor never decided")
    if attention.refunds_needing_review:
        count = attention.refunds_needing_review
        parts.append(f"{count} refund{'s' if count != 1 else ''} the processor never decided")
    if attention.refunds_returned:
        count = attention.refunds_returned
        parts.append(f"{count} refund{'s' if count != 1 else ''} returned by the processor, donor not repaid")
    if attention.events_parked:
        overdue = f" ({attention.events_parked_overdue} overdue)" if attention.events_parked_overdue else ""
        count = attention.events_parked
        parts.append(f"{count} processor event{'s' if count != 1 else ''} waiting to apply{overdue}")
    css = "bad" if attention.total else "ok"
    return f'<span class="{css}" id="attention">{escape("; ".join(parts))}</span>'


def dashboard_page(
    *,
    now: datetime,
    key_label: str,
    campaign_report: Report,
    trial_balance_report: Report,
    latest_run: RunView | None,
    activity: Activity,
    open_exceptions: int,
    attention: Attention,
    refcode_report: Report | None = None,
) -> str:
    plural = "s" if open_exceptions != 1 else ""
    open_note = (
        f'<span class="bad" id="open-exceptions">{open_exceptions} open exception{plural}</span>'
        if open_exceptions
        else '<span class="ok" id="open-exceptions">no open exceptions</span>'
    )
    body = (
        "<header><h1>Surge finance</h1>"
        f"<span>{_time(now)} · signed in as {escape(key_label)} · {open_note} · {attention_note(attention)}</span>"
        '<nav><a href="/dashboard/donations" id="donations-link">Donations</a> '
        '<a href="/dashboard/reconciliations" id="reconciliations-link">Reconciliations</a> '
        '<a href="/dashboard/reports" id="reports-link">Reports</a> '
        '<a href="/dashboard/audit" id="audit-link">Audit trail</a> '
        '<a href="/dashboard/admin" id="admin-link">Administration</a></nav>'
        '<form method="post" action="/dashboard/logout"><button type="submit">Sign out</button></form></header>'
        "<main>"
        f'<section class="wide" id="campaign-totals"><h2>Campaign totals</h2>{campaign_totals(campaign_report)}'
        "</section>"
        f'<section class="wide" id="activity"><h2>Activity</h2>{span_picker(activity.span)}{pace_note(activity.pace)}'
        f"{donations_chart(activity.donations, activity.span)}"
        f"{refunds_disputes_chart(activity.refunds, activity.disputes, activity.span)}</section>"
        f'<section class="wide" id="refcodes"><h2>By refcode</h2>{refcode_table(refcode_report)}</section>'
        f'<section id="trial-balance"><h2>Trial balance</h2>{trial_balance(trial_balance_report)}</section>'
        f'<section class="wide" id="reconciliation"><h2>Latest reconciliation</h2>{reconciliation(latest_run)}'
        "</section>"
        "</main>"
    )
    return page("Surge finance", body)


def audit_page(*, key_label: str, events: Sequence[AuditEvent], next_before: int | None) -> str:
    """The audit trail, newest first, a page at a time (engine/audit.py)."""
    rows = [
        (
            _time(event.at),
            escape(event.actor),
            escape(event.address or "—"),
            escape(event.action.replace("_", " ")),
            escape(event.subject or "—"),
            escape(", ".join(f"{name}: {value}" for name, value in event.changes.items())),
        )
        for event in events
    ]
    headers = [("When", False), ("Who", False), ("From", False), ("Did", False), ("What", False), ("Change", False)]
    events_table = table(headers, rows) if rows else '<p class="muted">Nothing recorded yet.</p>'
    more = f'<p><a id="older" href="/dashboard/audit?before={next_before}">Older</a></p>' if next_before else ""
    body = (
        f"<header><h1>Audit trail</h1><span>signed in as {escape(key_label)}</span>"
        '<a href="/dashboard">Dashboard</a></header>'
        f'<main><section class="wide" id="audit-events">{events_table}{more}</section></main>'
    )
    return page("Surge finance — audit trail", body)
