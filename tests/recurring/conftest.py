"""Recurring tests: a served engine (tests/e2e/conftest.py) with a fast scheduler, and helpers to make plans."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from engine.keys import Role
from tests.e2e.conftest import Surge, donation

FAST_SCHEDULER = {"recurring_poll_ms": 50, "processor_rate_per_s": 1_000_000.0}


def plan_body(
    amount: int = 1000,
    payment_method: str = "pm_card_visa",
    interval: str = "week",
    installments: int | None = None,
    start: datetime | None = None,
    **donor: Any,
) -> dict[str, Any]:
    body = donation(amount, payment_method, **donor)
    body["interval"] = interval
    if installments is not None:
        body["installments"] = installments
    if start is not None:
        body["start"] = start.isoformat()
    return body


def weeks_ago(weeks: float) -> datetime:
    # A little over: period n of a plan anchored n weeks ago is then due already.
    return datetime.now(UTC) - timedelta(weeks=weeks, minutes=1)


async def create_plan(surge: Surge, body: dict[str, Any], role: Role = Role.FINANCE) -> tuple[int, dict[str, Any]]:
    response = await surge.client.post(
        "/v1/recurring/plans", json=body, headers={**surge.auth(role), "Idempotency-Key": surge.next_key()}
    )
    return response.status, await response.json()


async def installment_statuses(connection: asyncpg.Connection | asyncpg.Pool) -> dict[tuple[str, int], str]:
    rows = await connection.fetch("SELECT plan_id, period, status FROM surge.recurring_installments")
    return {(r["plan_id"], r["period"]): r["status"] for r in rows}


async def open_installments(connection: asyncpg.Connection | asyncpg.Pool) -> int:
    return int(
        await connection.fetchval(
            "SELECT count(*) FROM surge.recurring_installments WHERE status IN ('due', 'retrying', 'charging')"
        )
    )


async def audit_exactly_once(connection: asyncpg.Connection | asyncpg.Pool) -> dict[str, int]:
    """Each period: at most one succeeded donation, and a succeeded installment has exactly one; each succeeded
    donation charged once at the simulator and in the ledger once; no donation of an installment left undecided."""
    per_period = await connection.fetch(
        """SELECT d.metadata->>'recurring_plan' AS plan_id, (d.metadata->>'recurring_period')::int AS period,
                  count(*) FILTER (WHERE d.status = 'succeeded') AS succeeded,
                  count(*) FILTER (WHERE d.status IN ('queued', 'charging', 'pending')) AS open
             FROM surge.donations d WHERE d.api_key_id = 'key_recurring' GROUP BY 1, 2"""
    )
    gaps = await connection.fetch(
        """SELECT p.id, p.next_period, count(i.period) AS made FROM surge.recurring_plans p
             LEFT JOIN surge.recurring_installments i ON i.plan_id = p.id
            GROUP BY p.id HAVING count(i.period) <> p.next_period OR max(i.period) <> p.next_period - 1"""
    )
    assert not gaps, f"periods skipped or doubled: {[dict(g) for g in gaps]}"
    statuses = await installment_statuses(connection)
    for row in per_period:
        key = (row["plan_id"], row["period"])
        assert row["succeeded"] <= 1, f"{key} charged {row['succeeded']} times"
        assert row["open"] == 0, f"{key} has an undecided donation"
        assert (statuses[key] == "succeeded") == (row["succeeded"] == 1), (key, statuses[key])
    charges = await connection.fetch(
        """SELECT c.donation_id, count(*) AS n FROM simulator.charges c
             JOIN surge.donations d ON d.id = c.donation_id
            WHERE c.status = 'succeeded' AND d.api_key_id = 'key_recurring' GROUP BY c.donation_id"""
    )
    assert all(c["n"] == 1 for c in charges), [c for c in charges if c["n"] != 1]
    ledger = await connection.fetchval(
        """SELECT count(*) FROM ledger.entries e JOIN surge.donations d ON d.id = e.reference
            WHERE e.kind = 'transfer' AND d.api_key_id = 'key_recurring'"""
    )
    succeeded = sum(1 for s in statuses.values() if s == "succeeded")
    assert len(charges) == succeeded == ledger, (len(charges), succeeded, ledger)
    return {s: sum(1 for v in statuses.values() if v == s) for s in set(statuses.values())}
