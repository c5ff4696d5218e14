"""The run's results as a terminal summary and a self-contained HTML report (inline SVG and CSS, no script, no
network), both rendered from the results dictionary that is also written as JSON."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import orjson

from toolkit.svg_chart import CHART_CSS, Annotation, Band, Series, render_chart

SECTIONS = (
    ("summary", "Summary"),
    ("faults", "Faults"),
    ("throughput", "Throughput"),
    ("latency", "Latency"),
    ("errors", "Errors"),
    ("queue", "Durable queue"),
    ("time-to-charge", "Time to charge"),
    ("statuses", "Outcomes"),
    ("audit", "Audit"),
    ("configuration", "Configuration"),
)

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:900px;color:#111827}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:32px;border-bottom:1px solid #e5e7eb}
.verdict{display:inline-block;padding:2px 10px;border-radius:4px;color:#fff;font-weight:600}
.pass{background:#16a34a}.fail{background:#dc2626}.skip{background:#6b7280}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 12px 3px 0;text-align:left;vertical-align:top}
th{color:#4b5563;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font:12px ui-monospace,Menlo,monospace}pre{background:#f9fafb;padding:8px;overflow:auto}
nav a{margin-right:10px}.note{color:#4b5563}
""" + CHART_CSS.lstrip("\n")


# -- numbers shared by the terminal and the page ---------------------------------------------------------------------


def summary_rows(results: Mapping[str, Any]) -> list[tuple[str, str]]:
    totals, latency, profile = results["totals"], results["latency_ms"], results["profile"]
    client = results.get("client", {})
    rows = [
        (
            "profile",
            f"{profile['name']}: {_num(profile['rate_per_s'])}/s baseline, peak "
            f"{_num(profile['peak_rate_per_s'])}/s, {_num(profile['duration_s'])} s, {profile['arrivals']} arrivals",
        ),
        ("requests", f"{totals['offered']} offered, {totals['completed']} answers, {totals['retries']} retries"),
        ("rate", f"offered {_num(totals['offered_per_s'])}/s, achieved {_num(totals['achieved_per_s'])}/s"),
        ("errors", f"{totals['errors']} ({_percent(totals['errors'], totals['completed'])})"),
        ("latency ms", "  ".join(f"{k} {_num(latency.get(k))}" for k in ("p50", "p90", "p99", "p999", "max"))),
        ("acknowledged", f"{client.get('acknowledged', 0)} donations (2xx); {client.get('declined', 0)} declined"),
    ]
    for key, label in (("own_latency_ms", "surge's own ms"), ("accepted_later_latency_ms", "queued 202s ms")):
        part = results.get(key) or {}
        if part.get("count"):  # own: each answer's latency less the processor's share (Server-Timing)
            rows.append((label, "  ".join(f"{k} {_num(part.get(k))}" for k in ("p50", "p99", "max"))))
    queue = results.get("queue_depth") or []
    depths = [s["depth"] for s in queue if s.get("depth") is not None]
    if depths:
        drain = results.get("drain") or {}
        drained = "drained" if drain.get("drained") else f"NOT drained ({drain.get('remaining')} left)"
        rows.append(("queue depth", f"max {max(depths)}; {drained} {_num(drain.get('seconds'))} s after the run"))
    charge = (results.get("time_to_charge") or {}).get("overall_ms") or {}
    if charge.get("count"):
        rows.append(
            (
                "time to charge s",
                "  ".join(f"{k} {_num(charge[k] / 1000)}" for k in ("p50", "p99", "max") if k in charge),
            )
        )
    bot = results.get("card_testing") or {}
    if bot.get("sent"):
        rows.append(("card testing", f"{bot['sent']} sent: {bot['declined']} declined, {bot['blocked']} blocked (429)"))
    chaos = results.get("chaos")
    if chaos:
        faults = chaos.get("faults") or []
        failed = sum(1 for fault in faults if fault.get("error"))
        kinds = sorted({fault["kind"] for fault in faults})
        rows.append(("faults", f"{len(faults)} (seed {chaos.get('seed')}): {', '.join(kinds)}; {failed} not made"))
    audit = results.get("audit")
    if audit is None:
        rows.append(("audit", "skipped: " + str(results.get("audit_skipped", "no database"))))
    else:
        rows.append(("audit", "PASSED" if audit["ok"] else f"FAILED ({audit['problem_count']} problems)"))
    return rows


def terminal_summary(results: Mapping[str, Any]) -> str:
    rows = summary_rows(results)
    width = max(len(label) for label, _ in rows)
    lines = ["", "surge loadtest summary", "-" * 22, *(f"{label:<{width}}  {value}" for label, value in rows)]
    statuses = results["totals"]["statuses"]
    lines.append(f"{'statuses':<{width}}  " + ", ".join(f"{k}: {v}" for k, v in statuses.items()))
    audit = results.get("audit")
    if audit and not audit["ok"]:
        lines.extend(f"  problem: {problem}" for problem in audit["problems"][:20])
    return "\n".join(lines)


# -- the HTML page ---------------------------------------------------------------------------------------------------


def write_report(results: Mapping[str, Any], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    path = folder / "report.html"
    path.write_text(render_html(results), encoding="utf-8")
    return path


def render_html(results: Mapping[str, Any]) -> str:
    audit = results.get("audit")
    verdict = "skip" if audit is None else ("pass" if audit["ok"] else "fail")
    verdict_text = {"skip": "audit skipped", "pass": "audit passed", "fail": "audit FAILED"}[verdict]
    body = [
        f"<h1>Surge load test: {escape(results['profile']['name'])}</h1>",
        f'<p><span class="verdict {verdict}">{verdict_text}</span> '
        f"<span class=note>started {escape(str(results.get('started_at', '')))} against "
        f"{escape(str(results.get('target', {}).get('url', '')))}</span></p>",
        "<nav>" + "".join(f'<a href="#{key}">{title}</a>' for key, title in SECTIONS) + "</nav>",
        _section("summary", "Summary", _table(summary_rows(results))),
        _section("faults", "Faults", _faults(results)),
        _section("throughput", "Throughput", _throughput(results)),
        _section("latency", "Latency", _latency(results)),
        _section("errors", "Errors", _errors(results)),
        _section("queue", "Durable queue", _queue(results)),
        _section("time-to-charge", "Time to charge", _time_to_charge(results)),
        _section("statuses", "Outcomes", _outcomes(results)),
        _section("audit", "Audit", _audit(results)),
        _section("configuration", "Configuration", _configuration(results)),
    ]
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Surge load test: {escape(results['profile']['name'])}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def _section(key: str, title: str, content: str) -> str:
    return f'<section id="{key}"><h2>{escape(title)}</h2>{content}</section>'


def _bands(results: Mapping[str, Any]) -> list[Band]:
    phases = results["profile"].get("phases") or []
    return [Band(p["name"], p["start_s"], p["end_s"]) for p in phases] if len(phases) > 1 else []


# A colour and a short mark per fault kind, for the timeline drawn over the charts.
FAULT_STYLE = {
    "worker_kill": ("#dc2626", "kill"),
    "postgres_stop": ("#7c3aed", "db down"),
    "processor_outage": ("#ea580c", "outage"),
    "processor_slow": ("#ca8a04", "slow"),
    "timeouts": ("#0891b2", "timeouts"),
    # Money faults are instants drawn without a mark (their hover text says what happened): a deadline run has
    # dozens of them, and written out they would bury the disruptive faults' marks.
    "refunds": ("#16a34a", ""),
    "dispute_open": ("#be185d", ""),
    "dispute_close": ("#be185d", ""),
}


def _annotations(results: Mapping[str, Any]) -> list[Annotation]:
    chaos = results.get("chaos") or {}
    notes = []
    for fault in chaos.get("faults") or []:
        start = fault["started_s"] if fault.get("started_s") is not None else fault["at_s"]
        end = start + fault["duration_s"] if fault["duration_s"] else start
        if fault["kind"] in ("worker_kill", "postgres_stop") and fault.get("ended_s") is not None:
            end = fault["ended_s"]  # killed until the new worker listened; down until the server was back
        color, mark = FAULT_STYLE.get(fault["kind"], ("#4b5563", fault["kind"]))
        if fault["kind"] == "processor_slow":
            mark = f"slow x{fault['detail'].get('factor')}"
        notes.append(Annotation(_fault_label(fault), start, end, color, fault["kind"], mark))
    return notes


def _fault_label(fault: Mapping[str, Any]) -> str:
    outcome = {k: v for k, v in (fault.get("outcome") or {}).items() if k != "traceback"}
    text = f"{fault['kind']} at {fault['at_s']:.1f} s"
    if fault.get("duration_s"):
        text += f" for {fault['duration_s']:.1f} s"
    if outcome:
        text += ": " + ", ".join(f"{k} {v}" for k, v in outcome.items())
    if fault.get("error"):
        text += f" — NOT MADE: {fault['error']}"
    return text


def _faults(results: Mapping[str, Any]) -> str:
    chaos = results.get("chaos")
    if not chaos:
        return "<p class=note>No faults injected (run with <code>--chaos</code> for the chaos rehearsal).</p>"
    note = (
        f"<p class=note>Seed {escape(str(chaos.get('seed')))}: the same seed gives the same schedule. Shaded spans "
        "and dashed lines on the charts below are these faults, as they really happened: a worker killed until its "
        "replacement listened, the database down until it accepted connections again, processor outages and "
        "slowdowns, windows of hanging charges (some charged, some lost), refunds and disputes.</p>"
    )
    header = "<tr><th>planned s</th><th>fault</th><th>started s</th><th>ended s</th><th>what happened</th></tr>"
    rows = []
    for fault in chaos.get("faults") or []:
        outcome = {k: v for k, v in (fault.get("outcome") or {}).items() if k != "traceback"}
        happened = escape(", ".join(f"{k} {v}" for k, v in outcome.items()))
        if fault.get("error"):
            happened += f" <b>not made: {escape(fault['error'])}</b>"
        rows.append(
            f'<tr><td class="n">{fault["at_s"]:.1f}</td><td>{escape(fault["kind"])}</td>'
            f'<td class="n">{_num(fault.get("started_s"))}</td><td class="n">{_num(fault.get("ended_s"))}</td>'
            f"<td>{happened}</td></tr>"
        )
    webhooks = chaos.get("webhooks") or {}
    money = chaos.get("money") or {}
    details = [
        "<h3>Webhook deliveries</h3>",
        _table([(k, str(v)) for k, v in webhooks.items()]),
        "<h3>Refunds and disputes</h3>",
        _table([(k, str(v)) for k, v in money.items()]),
        f"<p class=note>Timeout windows turned {escape(str(chaos.get('timeouts_planned')))} donations into hanging "
        "charges. Worker pids, oldest first: " + escape(str(chaos.get("workers"))) + "</p>",
    ]
    return note + f"<table>{header}{''.join(rows)}</table>" + "".join(details)


def _throughput(results: Mapping[str, Any]) -> str:
    timeline = results["timeline"]
    series = [
        Series("offered", [(s["t"], s["offered"]) for s in timeline]),
        Series("achieved (answers)", [(s["t"], s["completed"]) for s in timeline]),
    ]
    settled = (results.get("time_to_charge") or {}).get("settled_per_second") or []
    if settled:
        series.append(Series("charges settled", [(s["t"], s["count"]) for s in settled]))
    note = (
        "<p class=note>Offered: first attempts due per second (the profile). Achieved: answers received per second. "
        "Charges settled: donations reaching a final state per second — the processor's pace.</p>"
    )
    chart = render_chart(
        "Requests per second", series, y_label="per second", bands=_bands(results), annotations=_annotations(results)
    )
    return note + chart


def _latency(results: Mapping[str, Any]) -> str:
    timeline = results["timeline"]

    def points(key: str) -> list[tuple[float, float | None]]:
        return [(s["t"], s["latency_ms"].get(key)) for s in timeline]

    series = [Series(name, points(name)) for name in ("p50", "p90", "p99", "max")]
    overall = results["latency_ms"]
    table = _table([(k, _num(overall.get(k))) for k in ("count", "mean", "p50", "p90", "p99", "p999", "max")])
    note = (
        "<p class=note>From the time each request was due (not when it was sent) to its answer: time spent queued "
        "behind a slow engine counts. HDR histograms, 3 significant figures overall, 2 per second.</p>"
    )
    chart = render_chart(
        "Latency per second (ms, log scale)",
        series,
        y_label="ms",
        log_y=True,
        bands=_bands(results),
        annotations=_annotations(results),
    )
    return note + chart + table


def _errors(results: Mapping[str, Any]) -> str:
    timeline = results["timeline"]
    series = [Series("errors", [(s["t"], s["errors"]) for s in timeline], color="#dc2626", bars=True)]
    for outcome, color in (("blocked", "#9333ea"), ("limited", "#ea580c"), ("declined", "#4b5563")):
        series.append(Series(outcome, [(s["t"], s["outcomes"].get(outcome, 0)) for s in timeline], color=color))
    totals = results["totals"]
    kinds = totals.get("error_kinds") or {}
    rows = [(kind, str(count)) for kind, count in kinds.items()] or [("none", "0")]
    examples = totals.get("error_examples") or {}
    example_html = "".join(f"<p><code>{escape(k)}</code>: <code>{escape(v)}</code></p>" for k, v in examples.items())
    note = (
        "<p class=note>Errors: timeouts, lost connections, 5xx, load shed (503), and any answer that contradicts "
        "the request (e.g. 2xx for an invalid one). Declines, limits and card-testing blocks are expected outcomes, "
        "drawn as lines for context.</p>"
    )
    chart = render_chart(
        "Errors and refusals per second",
        series,
        y_label="per second",
        bands=_bands(results),
        annotations=_annotations(results),
    )
    return note + chart + _table(rows) + example_html


def _queue(results: Mapping[str, Any]) -> str:
    samples = results.get("queue_depth") or []
    if not samples:
        return "<p class=note>Not sampled.</p>"
    series = [
        Series("durable queue", [(s["t"], s.get("depth")) for s in samples]),
        Series("requests in progress", [(s["t"], s.get("in_flight")) for s in samples]),
    ]
    drain = results.get("drain") or {}
    note = (
        '<p class=note><code>surge_queue_depth{queue="durable"}</code> from <code>/metrics</code> once a second: '
        "donations accepted (202) and not yet settled. It grows while intake outruns the processor and drains after "
        f"the peak. Drained: {escape(str(drain.get('drained')))} after {_num(drain.get('seconds'))} s.</p>"
    )
    chart = render_chart(
        "Queue depth", series, y_label="donations", bands=_bands(results), annotations=_annotations(results)
    )
    return note + chart


def _time_to_charge(results: Mapping[str, Any]) -> str:
    charge = results.get("time_to_charge") or {}
    timeline = charge.get("timeline") or []
    if not timeline:
        return "<p class=note>Not measured (needs the database).</p>"

    def points(key: str) -> list[tuple[float, float | None]]:
        return [(s["t"], s[key] / 1000 if s.get(key) is not None else None) for s in timeline]

    series = [Series(name, points(name)) for name in ("p50", "p99", "max")]
    overall = charge.get("overall_ms") or {}
    rows = [(k, _num(overall[k] / 1000) if k != "count" else str(overall[k])) for k in overall if k != "mean"]
    note = (
        "<p class=note>From acceptance (the donation's <code>created</code> time) to settlement (<code>settled</code>),"
        " by the second the donation was accepted, in seconds.</p>"
    )
    chart = render_chart("Time to charge (s)", series, y_label="seconds", bands=_bands(results))
    return note + chart + _table(rows)


def _outcomes(results: Mapping[str, Any]) -> str:
    totals = results["totals"]
    parts = ["<h3>HTTP statuses (all attempts)</h3>", _table([(k, str(v)) for k, v in totals["statuses"].items()])]
    parts += ["<h3>Outcomes</h3>", _table([(k, str(v)) for k, v in totals["outcomes"].items()])]
    by_kind = totals.get("by_kind") or {}
    if by_kind:
        outcomes = sorted({o for counts in by_kind.values() for o in counts})
        header = "<tr><th>request kind</th>" + "".join(f"<th>{escape(o)}</th>" for o in outcomes) + "</tr>"
        rows = "".join(
            f"<tr><td>{escape(kind)}</td>"
            + "".join(f'<td class="n">{counts.get(o, 0)}</td>' for o in outcomes)
            + "</tr>"
            for kind, counts in by_kind.items()
        )
        parts += ["<h3>By request kind</h3>", f"<table>{header}{rows}</table>"]
    final = (results.get("client") or {}).get("final") or {}
    if final:
        parts += ["<h3>Final outcome per request (after retries)</h3>", _table([(k, str(v)) for k, v in final.items()])]
    return "".join(parts)


def _audit(results: Mapping[str, Any]) -> str:
    audit = results.get("audit")
    if audit is None:
        return f"<p class=note>Skipped: {escape(str(results.get('audit_skipped', 'no database')))}</p>"
    verdict = (
        '<p><span class="verdict pass">passed</span></p>'
        if audit["ok"]
        else (f'<p><span class="verdict fail">failed: {audit["problem_count"]} problems</span></p>')
    )
    checked = _table([(k, str(v)) for k, v in audit.get("checked", {}).items()])
    problems = "".join(f"<li><code>{escape(p)}</code></li>" for p in audit.get("problems", []))
    explanation = (
        "<p class=note>Every donation acknowledged with 2xx is in the ledger exactly once with the amount sent; no "
        "charge at the processor is missing from the ledger and none is doubled; no donor exceeds the limit; every "
        "entry balances and cached balances equal the postings (<code>surge ledger check</code>)."
        + (
            " After chaos also: every fee booked once as the processor charged it; every acknowledged refund final, "
            "in the ledger once and at the processor; no refund amount left reserved; every dispute booked as it "
            "stands; every webhook the processor sent recorded; <code>surge reconcile</code> with zero exceptions."
            if results.get("chaos")
            else ""
        )
        + "</p>"
    )
    return explanation + verdict + checked + (f"<ul>{problems}</ul>" if problems else "")


def _configuration(results: Mapping[str, Any]) -> str:
    config = {key: results.get(key) for key in ("profile", "target", "mix", "client_policy", "seed", "run_id")}
    return f"<pre>{escape(orjson.dumps(config, option=orjson.OPT_INDENT_2).decode())}</pre>"


def _table(rows: Sequence[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:,.3g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f} %" if whole else "0 %"
