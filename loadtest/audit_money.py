"""The chaos rehearsal's audit of the money edges, on top of ``loadtest/audit.py`` (same report).

``audit_money_and_events`` checks, against the simulated processor's record:
8. fees: every succeeded donation's fee is the processor's, booked once (ledger entry ``fee:<donation>``);
9. refunds: every refund the engine acknowledged (200/202) is final, in ``surge.refunds`` and in the ledger once
   with its amount, and at the processor; every succeeded refund in the engine is one the processor made; per
   donation, refunded amounts agree between engine, processor and ledger; no ``refund_reserved_minor`` is left;
   one idempotency key never gave two refunds;
10. disputes: every dispute at the processor is in the ledger once (withdrawal, fee, and the reversal exactly when
   won) and the donation's disputed amount matches its state;
11. webhooks: every event the processor sent was recorded by the engine (none lost), and each was acknowledged;
and ``audit_commands`` runs ``surge reconcile`` (zero exceptions) and ``surge ledger check`` (clean) as
operators would, exiting non-zero making a finding.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from loadtest.audit import AuditReport


async def audit_money_and_events(
    report: AuditReport,
    connection: asyncpg.Connection,
    *,
    refunds_acknowledged: Mapping[str, Mapping[str, Any]],
    key_conflicts: Sequence[str] = (),
    events_acknowledged: Mapping[str, int] | None = None,
) -> None:
    for conflict in key_conflicts:
        report.problem(f"refund idempotency: {conflict}")
    async with connection.transaction(isolation="repeatable_read", readonly=True):
        if await connection.fetchval("SELECT to_regclass('simulator.charges')") is None:
            return
        await _check_fees(report, connection)
        await _check_refunds(report, connection, refunds_acknowledged)
        await _check_disputes(report, connection)
        await _check_events(report, connection, events_acknowledged)


async def _entry_amounts(connection: asyncpg.Connection, references: Collection[str]) -> dict[str, int]:
    """Ledger reference → the entry's amount (the sum of its debit side)."""
    rows = await connection.fetch(
        """SELECT e.reference, sum(p.amount) FILTER (WHERE p.amount > 0) AS amount
             FROM ledger.entries e JOIN ledger.postings p ON p.entry_id = e.id
            WHERE e.reference = ANY($1::text[]) GROUP BY e.reference""",
        list(references),
    )
    return {row["reference"]: row["amount"] or 0 for row in rows}


async def _check_fees(report: AuditReport, connection: asyncpg.Connection) -> None:
    rows = await connection.fetch(
        """SELECT d.id, d.fee_minor, c.fee AS processor_fee
             FROM surge.donations d JOIN simulator.charges c ON c.donation_id = d.id AND c.status = 'succeeded'
            WHERE d.status = 'succeeded'"""
    )
    booked = await _entry_amounts(connection, [f"fee:{row['id']}" for row in rows])
    for row in rows:
        donation_id, fee = row["id"], row["processor_fee"]
        if row["fee_minor"] != fee:
            report.problem(f"{donation_id}: the processor's fee is {fee}, the donation records {row['fee_minor']}")
        in_ledger = booked.get(f"fee:{donation_id}")
        if fee and in_ledger != fee:
            report.problem(f"{donation_id}: fee {fee} at the processor, {in_ledger or 'nothing'} booked in the ledger")
    report.checked["fees"] = len(rows)


async def _check_refunds(
    report: AuditReport, connection: asyncpg.Connection, acknowledged: Mapping[str, Mapping[str, Any]]
) -> None:
    engine = {
        row["id"]: row
        for row in await connection.fetch(
            "SELECT id, donation_id, amount_minor, status, processor_reference FROM surge.refunds"
        )
    }
    processor = {
        row["refund_id"]: row
        for row in await connection.fetch("SELECT id, refund_id, charge_id, amount FROM simulator.refunds")
    }
    booked = await _entry_amounts(connection, list(engine))
    for refund_id, seen in acknowledged.items():
        row = engine.get(refund_id)
        if row is None:
            report.problem(f"refund {refund_id} ({seen.get('donation')}): acknowledged but not in surge.refunds")
        elif row["status"] == "pending":
            report.problem(f"refund {refund_id} ({row['donation_id']}): acknowledged, still pending after the run")
    for refund_id, row in engine.items():
        label = f"refund {refund_id} ({row['donation_id']})"
        if row["status"] == "pending":
            if refund_id not in acknowledged:
                report.problem(f"{label}: still pending after the run")
            continue
        if row["status"] != "succeeded":
            if refund_id in booked:
                report.problem(f"{label}: {row['status']} but booked in the ledger")
            continue
        if booked.get(refund_id) != row["amount_minor"]:
            report.problem(f"{label}: succeeded for {row['amount_minor']}, the ledger has {booked.get(refund_id)}")
        at_processor = processor.get(refund_id)
        if at_processor is None:
            report.problem(f"{label}: booked for {row['amount_minor']} but the processor made no such refund")
        elif at_processor["amount"] != row["amount_minor"]:
            report.problem(
                f"{label}: the processor refunded {at_processor['amount']}, the engine {row['amount_minor']}"
            )
    for refund_id, row in processor.items():
        if engine.get(refund_id, {}).get("status") != "succeeded":
            report.problem(
                f"processor refund {row['id']} ({refund_id}) of {row['amount']}: not a succeeded refund here"
            )
    totals = await connection.fetch(
        """SELECT d.id, d.refunded_minor, d.refund_reserved_minor,
                  (SELECT coalesce(sum(r.amount_minor), 0) FROM surge.refunds r
                    WHERE r.donation_id = d.id AND r.status = 'succeeded') AS engine_refunded,
                  (SELECT coalesce(sum(s.amount), 0) FROM simulator.refunds s
                     JOIN simulator.charges c ON c.id = s.charge_id WHERE c.donation_id = d.id) AS processor_refunded
             FROM surge.donations d
            WHERE d.refunded_minor > 0 OR d.refund_reserved_minor > 0
               OR EXISTS (SELECT 1 FROM surge.refunds r WHERE r.donation_id = d.id)
               OR EXISTS (SELECT 1 FROM simulator.refunds s JOIN simulator.charges c ON c.id = s.charge_id
                           WHERE c.donation_id = d.id)"""
    )
    for row in totals:
        if row["refund_reserved_minor"]:
            report.problem(f"{row['id']}: {row['refund_reserved_minor']} still reserved for refunds after the run")
        if not row["refunded_minor"] == row["engine_refunded"] == row["processor_refunded"]:
            report.problem(
                f"{row['id']}: refunded {row['refunded_minor']} on the donation, {row['engine_refunded']} in its "
                f"refunds, {row['processor_refunded']} at the processor"
            )
    report.checked["refunds"] = len(engine)
    report.checked["refunds_acknowledged"] = len(acknowledged)


async def _check_disputes(report: AuditReport, connection: asyncpg.Connection) -> None:
    rows = await connection.fetch(
        """SELECT s.id, s.amount, s.fee, s.status, c.donation_id, d.disputed_minor
             FROM simulator.disputes s JOIN simulator.charges c ON c.id = s.charge_id
             LEFT JOIN surge.donations d ON d.id = c.donation_id"""
    )
    references = [f"{prefix}:{row['id']}" for row in rows for prefix in ("dispute", "dispute-fee", "dispute-won")]
    booked = await _entry_amounts(connection, references)
    for row in rows:
        dispute, label = row["id"], f"dispute {row['id']} ({row['donation_id']}, {row['status']})"
        if booked.get(f"dispute:{dispute}") != row["amount"]:
            report.problem(f"{label}: {row['amount']} withdrawn, the ledger has {booked.get(f'dispute:{dispute}')}")
        if row["fee"] and booked.get(f"dispute-fee:{dispute}") != row["fee"]:
            report.problem(f"{label}: fee {row['fee']}, the ledger has {booked.get(f'dispute-fee:{dispute}')}")
        won = row["status"] == "won"
        if won != (f"dispute-won:{dispute}" in booked):
            report.problem(f"{label}: the ledger {'lacks' if won else 'has'} the reversal of a won dispute")
        expected = 0 if won else row["amount"]
        if row["disputed_minor"] != expected:
            report.problem(f"{label}: the donation shows {row['disputed_minor']} disputed, expected {expected}")
    report.checked["disputes"] = len(rows)


async def _check_events(
    report: AuditReport, connection: asyncpg.Connection, acknowledged: Mapping[str, int] | None
) -> None:
    sent = await connection.fetch("SELECT id, account, type FROM simulator.events ORDER BY created_at, id")
    recorded = {
        (row["processor"], row["event_id"])
        for row in await connection.fetch("SELECT processor, event_id FROM surge.processor_events")
    }
    for row in sent:
        if (row["account"], row["id"]) not in recorded:
            report.problem(f"webhook {row['id']} ({row['type']}): sent by the processor, never recorded by the engine")
        elif acknowledged is not None and not acknowledged.get(row["id"]):
            report.problem(f"webhook {row['id']} ({row['type']}): recorded but never acknowledged with 2xx")
    report.checked["webhook_events"] = len(sent)


async def audit_commands(
    report: AuditReport,
    database_url: str,
    started_epoch_s: float,
    environment: Mapping[str, str] | None = None,
    processor: str = "simulated",
) -> None:
    """``surge finance reconcile`` over the run (zero exceptions) and ``surge ledger check``, as operators run them."""
    start = datetime.fromtimestamp(started_epoch_s, UTC) - timedelta(minutes=5)
    end = datetime.now(UTC) + timedelta(minutes=5)
    reconcile = await _surge(
        database_url,
        environment,
        "reconcile",
        "--processor",
        processor,
        "--from",
        start.isoformat(),
        "--to",
        end.isoformat(),
        "--json",
        "--by",
        "surge loadtest audit",
    )
    report.checked["reconciliation_exit"] = reconcile[0]
    if reconcile[0] != 0:
        for line in _reconciliation_findings(reconcile[1]):
            report.problem(f"reconciliation: {line}")
    ledger = await _surge(database_url, environment, "ledger", "check")
    report.checked["ledger_check_exit"] = ledger[0]
    if ledger[0] != 0:
        report.problem(f"surge ledger check exited {ledger[0]}: {ledger[1].strip()[-500:]}")


def _reconciliation_findings(output: str) -> list[str]:
    try:
        run = orjson.loads(output)
    except orjson.JSONDecodeError:
        return [f"surge finance reconcile failed: {output.strip()[-500:]}"]
    exceptions = run.get("exceptions") or []
    if not exceptions:
        return [f"surge finance reconcile exited non-zero with no exception listed: {output.strip()[-300:]}"]
    return [
        f"{e.get('kind')} {e.get('subject')} (donation {e.get('donation')}): processor {e.get('processor_amount')}, "
        f"ledger {e.get('ledger_amount')} {e.get('currency')}" + (f" — {e['note']}" if e.get("note") else "")
        for e in exceptions
    ]


async def _surge(database_url: str, environment: Mapping[str, str] | None, *arguments: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine",
        *arguments,
        env={**os.environ, **(environment or {}), "DATABASE_URL": database_url},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return process.returncode if process.returncode is not None else -1, output.decode(errors="replace")
