"""`surge loadtest --chaos`, seeded and short, end to end: real engine workers SIGKILLed and started again, the real
embedded PostgreSQL stopped in immediate mode and started again, processor outages, slowdowns and hanging charges,
webhooks duplicated, delayed and reordered, refunds and disputes — then the report and the audit.

One rehearsal (module scope) serves every test here: the faults really happened and the report draws them (these
pass now), and the audit passes (expected to fail until the fixes of issue 10 are merged; see its reason).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.cli import build_parser
from loadtest.chaos.schedule import ChaosOptions, build_schedule
from loadtest.cli import config_from_args
from loadtest.run import passed, run_load_test

pytestmark = pytest.mark.slow

SEED = 11
DURATION_S = 16


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], Path, list[str]]]:
    folder = tmp_path_factory.mktemp("chaos")
    args = build_parser().parse_args(
        [
            "loadtest",
            "--chaos",
            "--seed",
            str(SEED),
            "--profile",
            "steady",
            "--rate",
            "12",
            "--duration",
            str(DURATION_S),
            "--card-testing",
            "0",
            "--report-dir",
            str(folder),
            "--drain-timeout",
            "15",
            "--progress-interval",
            "5",
        ]
    )
    config = config_from_args(args)
    # More duplicates than the default, so that a short run certainly redelivers some events.
    config = type(config)(**{**vars(config), "chaos_options": ChaosOptions(webhook_duplicate_share=0.6)})
    lines: list[str] = []
    results = asyncio.run(run_load_test(config, output=lines.append))
    yield results, folder, lines


def test_the_flag_is_on_the_command_line() -> None:
    config = config_from_args(build_parser().parse_args(["loadtest", "--profile", "deadline", "--chaos"]))
    assert config.chaos and config.policy.retry_backoff == 2.0 and config.policy.attempts_max == 8
    with pytest.raises(ValueError, match="--chaos starts its own engine"):
        asyncio.run(
            run_load_test(config_from_args(build_parser().parse_args(["loadtest", "--chaos", "--url", "http://x:1"])))
        )


def test_the_schedule_run_is_the_seeds(rehearsal: tuple[dict[str, Any], Path, list[str]]) -> None:
    results, _, lines = rehearsal
    chaos = results["chaos"]
    expected = build_schedule(SEED, DURATION_S, ChaosOptions(webhook_duplicate_share=0.6))
    assert chaos["schedule"] == [fault.as_json() for fault in expected]
    assert any(line.startswith(f"chaos (seed {SEED})") for line in lines)


def test_every_fault_really_happened(rehearsal: tuple[dict[str, Any], Path, list[str]]) -> None:
    results, _, _ = rehearsal
    chaos = results["chaos"]
    faults = chaos["faults"]
    assert [f["error"] for f in faults if f["error"]] == []
    kill = next(f for f in faults if f["kind"] == "worker_kill")["outcome"]
    assert kill["exit_status"] == -9 and kill["new_pid"] != kill["old_pid"]
    assert chaos["workers"][str(kill["worker"])] == [kill["old_pid"], kill["new_pid"]]
    database = next(f for f in faults if f["kind"] == "postgres_stop")["outcome"]
    assert database["running_while_down"] is None
    assert database["postmaster_after"] not in (None, database["postmaster_before"])
    assert chaos["postgres"] == {"stops": 1, "starts": 1}
    assert chaos["processor_control"]["outages"] and chaos["processor_control"]["slowdowns"]
    assert chaos["timeouts_planned"] > 0
    webhooks = chaos["webhooks"]
    assert webhooks["events"] > 0 and webhooks["delivered_twice_or_more"] > 0 and webhooks["given_up"] == []
    money = chaos["money"]
    assert money["refunds_acknowledged"] > 0 and money["disputes"]


def test_the_report_draws_the_fault_timeline(rehearsal: tuple[dict[str, Any], Path, list[str]]) -> None:
    _, folder, _ = rehearsal
    page = (folder / "report.html").read_text()
    assert '<section id="faults">' in page
    for kind in ("worker_kill", "postgres_stop", "processor_outage", "processor_slow", "timeouts", "refunds"):
        assert page.count(f'class="annotation" data-kind="{kind}"') >= 2, kind  # over throughput and latency


@pytest.mark.xfail(
    strict=False,
    reason="issue 10's defects, fixed on other branches: on i10-chaos alone the audit finds acknowledged donations "
    "still pending or charging after the drain (stuck donations, defect 8), refunds left pending with "
    "refund_reserved_minor held (no refund recovery, defect 2), and refund.created webhooks for pending refunds "
    "booked as second refunds the processor never made (defects 1 and 3); which of them a short run meets "
    "depends on timing",
)
def test_the_audit_passes_after_chaos(rehearsal: tuple[dict[str, Any], Path, list[str]]) -> None:
    results, _, _ = rehearsal
    audit = results["audit"]
    assert passed(results) and audit["ok"], audit["problems"]
    assert audit["checked"]["reconciliation_exit"] == 0 and audit["checked"]["ledger_check_exit"] == 0
