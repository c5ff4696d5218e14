"""`surge loadtest` end to end: it starts Surge, sends a few seconds of mixed traffic and passes its audit."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.cli import build_parser
from loadtest.cli import config_from_args
from loadtest.profiles import ProfileName
from loadtest.run import passed, run_load_test

pytestmark = pytest.mark.slow


def test_the_subcommand_is_registered_with_its_flags() -> None:
    args = build_parser().parse_args(["loadtest", "--profile", "spike", "--peak", "4", "--engine-env", "A=b"])
    config = config_from_args(args)
    assert config.profile.name is ProfileName.SPIKE and config.profile.peak_multiplier == 4
    assert config.engine_environment == {"A": "b"} and config.url is None
    assert config.report_folder == Path("loadtest-report")


async def test_a_short_rehearsal_passes_its_audit(database_url: str, tmp_path: Path) -> None:
    args = build_parser().parse_args(
        [
            "loadtest",
            "--profile",
            "steady",
            "--rate",
            "25",
            "--duration",
            "3",
            "--timeout-share",
            "0",
            "--card-testing",
            "20",
            "--database-url",
            database_url,
            "--report-dir",
            str(tmp_path),
            "--engine-env",
            "SURGE_SIM_TIMEOUT_RATE=0",
            # The donation page's challenge (the deterministic test verifier): the bot is challenged at its first
            # few declines, before it could be clearly refused (its charges take ~250 ms to decline).
            "--engine-env",
            "SURGE_CHALLENGE_VERIFIER=test",
            "--drain-timeout",
            "30",
        ]
    )
    lines: list[str] = []
    results = await run_load_test(config_from_args(args), output=lines.append)
    assert passed(results) and results["audit"]["ok"], results["audit"]
    totals = results["totals"]
    assert totals["offered"] == 75 + 20 and totals["errors"] == 0, totals
    assert results["client"]["acknowledged"] > 40
    assert results["card_testing"]["blocked"] > 0  # the bot's address is challenged after a few declines
    assert results["drain"]["drained"] and results["time_to_charge"]["overall_ms"]["count"] > 40
    assert (tmp_path / "report.html").exists() and (tmp_path / "results.json").exists()
    assert any("offered/s" in line for line in lines)
