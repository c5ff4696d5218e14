"""The report renders from a small synthetic result: every section, charts inline, nothing fetched."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from loadtest.generator import ClientPolicy, Generator
from loadtest.http_client import ConnectionPool
from loadtest.monitor import EngineMonitor, QueueSample
from loadtest.profiles import Profile
from loadtest.recorder import Outcome, Recorder
from loadtest.report import SECTIONS, render_html, terminal_summary, write_report
from loadtest.run import LoadTestConfig, _results, passed
from loadtest.traffic import Kind


def synthetic_results(audit_ok: bool = True) -> dict:
    second = 1_000_000_000
    recorder = Recorder(start_ns=0)
    for n in range(300):
        due = n * second // 30
        recorder.due(due, retry=False)
        recorder.sending(due)
        status, outcome = ("201", Outcome.ACCEPTED) if n % 10 else ("503", Outcome.SHED)
        recorder.answered(Kind.DONATION, status, outcome, due, due + (5 + n % 50) * 1_000_000, "overloaded")
    recorder.answered(Kind.CARD_TESTING, "429", Outcome.BLOCKED, 0, 2_000_000)
    generator = Generator([], ConnectionPool("127.0.0.1", 9), ClientPolicy(), recorder)
    generator.record.acknowledged.update({f"don_{n}": 2500 for n in range(270)})
    monitor = EngineMonitor("127.0.0.1", 9, 0)
    monitor.samples.extend(QueueSample(float(t), max(0, 40 * t - 3 * t * t), 5) for t in range(16))
    config = LoadTestConfig(profile=Profile.named("deadline", rate_per_s=20, duration_s=10, peak_multiplier=3))
    drain = {"drained": True, "seconds": 4.5, "remaining": 0}
    results = _results(config, "r1", recorder, generator, monitor, drain, 10.4, 1_700_000_000.0)
    results["target"] = {"url": "http://127.0.0.1:9", "started_by_loadtest": True}
    results["time_to_charge"] = {
        "overall_ms": {"count": 270, "mean": 900.0, "p50": 300.0, "p90": 2000.0, "p99": 4000.0, "max": 5000.0},
        "timeline": [{"t": t, "count": 27, "p50": 300.0 * t, "p99": 500.0 * t, "max": 600.0 * t} for t in range(10)],
        "settled_per_second": [{"t": t, "count": 27} for t in range(10)],
    }
    problems = [] if audit_ok else ["don_1: acknowledged with 2xx but not in surge.donations"]
    results["audit"] = {"ok": audit_ok, "problem_count": len(problems), "problems": problems, "checked": {"a": 1}}
    return orjson.loads(orjson.dumps(results))  # exactly what results.json holds


def test_report_has_every_section_with_inline_charts_and_no_network(tmp_path: Path) -> None:
    path = write_report(synthetic_results(), tmp_path)
    html = path.read_text()
    for key, title in SECTIONS:
        assert f'<section id="{key}"><h2>{title}</h2>' in html
    assert html.count("<svg") == 5  # throughput, latency, errors, queue depth, time to charge
    assert "<polyline" in html and "audit passed" in html
    # Nothing loads from anywhere: no scripts, stylesheets, images or fonts by URL.
    assert not re.search(r"<script|<link|<img|src=|href=\"https?:|url\(|@import", html)
    assert orjson.loads((tmp_path / "results.json").read_bytes())["totals"]["offered"] == 300


SUMMARY_LINES = [
    "",
    "surge loadtest summary",
    "----------------------",
    "profile           deadline: 20/s baseline, peak 60/s, 10 s, uniform arrivals",
    "requests          300 offered, 301 answers, 0 retries",
    "rate              offered 30/s, achieved 28.9/s",
    "errors            30 (9.97 %)",
    "latency ms        p50 29  p90 49  p99 54  p999 54  max 54",
    "acknowledged      270 donations (2xx); 0 declined",
    "surge's own ms    p50 29  p99 54  max 54",  # no processor time in these answers: all of it is Surge's
    "queue depth       max 133; drained 4.5 s after the run",
    "time to charge s  p50 0.3  p99 4  max 5",
    "card testing      1 sent: 0 declined, 1 blocked (429)",
]


def test_summary_and_exit_verdict_follow_the_audit() -> None:
    good, bad = synthetic_results(), synthetic_results(audit_ok=False)
    assert passed(good) and not passed(bad)
    assert terminal_summary(good) == "\n".join(
        [*SUMMARY_LINES, "audit             PASSED", "statuses          201: 270, 429: 1, 503: 30"]
    )
    assert terminal_summary(bad) == "\n".join(
        [
            *SUMMARY_LINES,
            "audit             FAILED (1 problems)",
            "statuses          201: 270, 429: 1, 503: 30",
            "  problem: don_1: acknowledged with 2xx but not in surge.donations",
        ]
    )
    assert "audit FAILED" in render_html(bad)
