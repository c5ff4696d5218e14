"""`surge loadtest --profile renewals`, small: plans due at once against a capped processor, then the audit."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.renewals import RenewalsConfig, run_renewals

pytestmark = pytest.mark.slow


async def test_renewal_day_charges_each_due_installment_once_or_says_why(tmp_path: Path) -> None:
    lines: list[str] = []
    results = await run_renewals(RenewalsConfig(plans=200, report_folder=tmp_path), output=lines.append)
    assert results["audit"]["ok"], results["audit"]["problems"]
    checked = results["audit"]["checked"]
    assert checked["installments"] == 200
    assert checked["reconciliation_exit"] == 0 and checked["ledger_check_exit"] == 0
    assert checked.get("skipped:contribution_limit_exceeded", 0) == results["mix"]["over_limit"]
    assert results["installments_enqueued_per_s"] and results["drain_s"]
    assert (tmp_path / "renewals.json").exists()
