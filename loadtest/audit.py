"""The post-run audit: what clients were told, what the processor did and what the ledger says must agree.

    report = await audit_run(connection, acknowledged={"don_…": 2500, …}, declined={"don_…"})

Checks, each reported as a problem with the donation it concerns:
1. every donation acknowledged with 2xx exists with the amount the client sent and is settled (not still queued,
   charging or pending once the queue has drained) — or, still open, was flagged for finance's review because the
   processor never decided it (counted as ``surfaced_for_review``; check 4 proves the processor did not charge it);
2. every acknowledged donation that succeeded is in the ledger exactly once (one entry crediting the campaign's
   contributions account) with that amount; declined and failed ones (and every donation answered 402) are not;
3. no ledger donation entry belongs to a donation that did not succeed;
4. the processor's record (``simulator.charges``, when the simulated processor is used): every succeeded charge is
   in the ledger with its amount, no donation was charged successfully twice, and no ledger donation lacks a charge;
5. no donor's succeeded donations (less what was refunded or lost in a dispute) exceed the campaign's limit for the
   election, and no hold is left over;
6. ``ledger.check.check_ledger``: every entry balances and cached balances equal the postings;
7. receipts (``surge.receipts``): every acknowledged donation that succeeded has exactly one donation receipt, no
   other donation has one, and none ended ``failed``; reported with how many were sent and how far behind the
   relay ran (the longest wait from a receipt's writing to its sending, and the oldest still waiting).

Checks 3-6 cover the whole database, not only this run's donations: they are invariants. It takes a connection and
the client's view, so that tests can plant a discrepancy and see it caught.

After a chaos rehearsal (``--chaos``) ``audit_money_and_events`` adds the money edges, against the simulated
processor's record:
7. fees: every succeeded donation's fee is the processor's, booked once (ledger entry ``fee:<donation>``);
8. refunds: every refund the engine acknowledged (200/202) is final, in ``surge.refunds`` and in the ledger once
   with its amount, and at the processor; every succeeded refund in the engine is one the processor made; per
   donation, refunded amounts agree between engine, processor and ledger; no ``refund_reserved_minor`` is left;
   one idempotency key never gave two refunds;
9. disputes: every dispute at the processor is in the ledger once (withdrawal, fee, and the reversal exactly when
   won) and the donation's disputed amount matches its state;
10. webhooks: every event the processor sent was recorded by the engine (none lost), and each was acknowledged;
and ``audit_commands`` runs ``surge reconcile`` (zero exceptions) and ``surge ledger check`` (clean) as
operators would, exiting non-zero making a finding.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from ledger.check import check_ledger

PROBLEMS_MAX = 100  # keep the report readable when something is badly wrong; the count is kept in full
_OPEN_STATUSES = ("queued", "charging", "pending")


@dataclass
class AuditReport:
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < PROBLEMS_MAX:
            self.problems.append(text)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "problem_count": self.problem_count, "problems": self.problems, "checked": self.checked}


async def audit_run(
    connection: asyncpg.Connection, acknowledged: Mapping[str, int], declined: Collection[str] = ()
) -> AuditReport:
    report = AuditReport()
    # One snapshot for every query: a webhook or a late settlement landing meanwhile cannot produce a false alarm.
    async with connection.transaction(isolation="repeatable_read", readonly=True):
        donations = await _donations(connection)
        in_ledger = await _ledger_donations(connection)
        _check_acknowledged(report, acknowledged, declined, donations, in_ledger)
        _check_ledger_donations(report, donations, in_ledger)
        await _check_processor(report, connection, donations, in_ledger)
        await _check_limits(report, connection)
        await _check_receipts(report, connection, acknowledged, donations)
    ledger = await check_ledger(connection)
    for problem in ledger.problems:
        report.problem(f"ledger check: {problem}")
    report.checked.update(
        acknowledged=len(acknowledged),
        declined_answers=len(declined),
        donations=len(donations),
        ledger_donations=len(in_ledger),
        ledger_entries=ledger.entries,
    )
    return report


async def _donations(connection: asyncpg.Connection) -> dict[str, asyncpg.Record]:
    rows = await connection.fetch(
        """SELECT id, status, amount_minor, campaign, processor, payment_method, attempts, next_attempt_at,
                  needs_review_at
             FROM surge.donations"""
    )
    return {row["id"]: row for row in rows}


async def _ledger_donations(connection: asyncpg.Connection) -> dict[str, tuple[int, int]]:
    """Donation id → (entries crediting a contributions account, amount credited), from the postings."""
    rows = await connection.fetch(
        """SELECT e.metadata->>'donation' AS donation_id, count(DISTINCT e.id) AS entries, -sum(p.amount) AS amount
             FROM ledger.entries e
             JOIN ledger.postings p ON p.entry_id = e.id
             JOIN ledger.accounts a ON a.id = p.account_id
            WHERE a.code LIKE 'contributions:%' AND p.amount < 0 AND e.kind = 'transfer'
            GROUP BY 1"""
    )
    return {row["donation_id"]: (row["entries"], row["amount"]) for row in rows}


def _check_acknowledged(
    report: AuditReport,
    acknowledged: Mapping[str, int],
    declined: Collection[str],
    donations: Mapping[str, asyncpg.Record],
    in_ledger: Mapping[str, tuple[int, int]],
) -> None:
    for donation_id, amount in acknowledged.items():
        donation = donations.get(donation_id)
        if donation is None:
            report.problem(f"{donation_id}: acknowledged with 2xx but not in surge.donations")
            continue
        if donation["amount_minor"] != amount:
            report.problem(f"{donation_id}: client sent {amount}, the engine recorded {donation['amount_minor']}")
        status = donation["status"]
        if status in _OPEN_STATUSES and donation["needs_review_at"] is not None:
            # The processor never decided it (a request lost on every try): surfaced for finance's review, its
            # amount still held. Not lost: were it charged at the processor, check 4 would find it unbooked.
            report.checked["surfaced_for_review"] = report.checked.get("surfaced_for_review", 0) + 1
        elif status in _OPEN_STATUSES:
            report.problem(
                f"{donation_id}: acknowledged but still {status} after the queue drained "
                f"({donation['payment_method']}, {donation['attempts']} processor calls, next at "
                f"{donation['next_attempt_at']:%H:%M:%S})"
            )
        elif status == "succeeded":
            entries, credited = in_ledger.get(donation_id, (0, 0))
            if entries != 1:
                report.problem(f"{donation_id}: acknowledged and succeeded but in the ledger {entries} times")
            elif credited != amount:
                report.problem(f"{donation_id}: acknowledged {amount} but the ledger credits {credited}")
    for donation_id in declined:
        if donation_id in in_ledger:
            report.problem(f"{donation_id}: answered 402 (declined) but posted to the ledger")
    report.checked["acknowledged_succeeded"] = sum(
        1 for d in acknowledged if (row := donations.get(d)) is not None and row["status"] == "succeeded"
    )


async def _check_receipts(
    report: AuditReport,
    connection: asyncpg.Connection,
    acknowledged: Mapping[str, int],
    donations: Mapping[str, asyncpg.Record],
) -> None:
    if await connection.fetchval("SELECT to_regclass('surge.receipts')") is None:
        return  # an engine from before receipts
    rows = await connection.fetch(
        """SELECT donation_id, count(*) AS receipts, count(*) FILTER (WHERE status = 'failed') AS failed,
                  min(last_error) FILTER (WHERE status = 'failed') AS error
             FROM surge.receipts WHERE kind = 'donation' GROUP BY donation_id"""
    )
    receipts = {row["donation_id"]: row for row in rows}
    for donation_id in acknowledged:
        donation = donations.get(donation_id)
        if donation is not None and donation["status"] == "succeeded":
            count = receipts[donation_id]["receipts"] if donation_id in receipts else 0
            if count != 1:
                report.problem(f"{donation_id}: acknowledged and succeeded but has {count} receipts")
    for donation_id, row in receipts.items():
        donation = donations.get(donation_id)
        if donation is None or donation["status"] != "succeeded":
            report.problem(f"{donation_id}: has a receipt but did not succeed")
        if row["failed"]:
            report.problem(f"{donation_id}: its receipt failed: {row['error']}")
    totals = await connection.fetchrow(
        """SELECT count(*) FILTER (WHERE status = 'sent') AS sent,
                  count(*) FILTER (WHERE status = 'pending') AS pending,
                  coalesce(max(extract(epoch FROM sent_at - created_at)), 0)::float8 AS lag_max_s,
                  coalesce(max(extract(epoch FROM now() - created_at)) FILTER (WHERE status = 'pending'), 0)::float8
                      AS oldest_pending_s
             FROM surge.receipts"""
    )
    report.checked.update(
        receipts_sent=totals["sent"],
        receipts_pending=totals["pending"],
        receipt_relay_lag_max_ms=round(totals["lag_max_s"] * 1000),
        receipt_oldest_pending_ms=round(totals["oldest_pending_s"] * 1000),
    )


def _check_ledger_donations(
    report: AuditReport, donations: Mapping[str, asyncpg.Record], in_ledger: Mapping[str, tuple[int, int]]
) -> None:
    for donation_id, (entries, credited) in in_ledger.items():
        donation = donations.get(donation_id)
        if donation is None:
            report.problem(f"{donation_id}: in the ledger but not in surge.donations")
        elif donation["status"] != "succeeded":
            report.problem(f"{donation_id}: in the ledger but its donation is {donation['status']}")
        elif entries != 1 or credited != donation["amount_minor"]:
            report.problem(
                f"{donation_id}: the ledger has {entries} entries crediting {credited} for a donation of "
                f"{donation['amount_minor']}"
            )


async def _check_processor(
    report: AuditReport,
    connection: asyncpg.Connection,
    donations: Mapping[str, asyncpg.Record],
    in_ledger: Mapping[str, tuple[int, int]],
) -> None:
    if await connection.fetchval("SELECT to_regclass('simulator.charges')") is None:
        return
    rows = await connection.fetch(
        "SELECT id, account, donation_id, amount, status FROM simulator.charges WHERE status = 'succeeded'"
    )
    accounts = {row["account"] for row in await connection.fetch("SELECT DISTINCT account FROM simulator.charges")}
    charged: dict[str, list[asyncpg.Record]] = {}
    for row in rows:
        charged.setdefault(row["donation_id"], []).append(row)
    for donation_id, charges in charged.items():
        if len(charges) > 1:
            references = ", ".join(c["id"] for c in charges)
            report.problem(f"{donation_id}: charged {len(charges)} times at the processor ({references})")
        entries, credited = in_ledger.get(donation_id, (0, 0))
        if entries == 0:
            report.problem(f"{donation_id}: charged at the processor ({charges[0]['id']}) but not in the ledger")
        elif credited != charges[0]["amount"]:
            report.problem(f"{donation_id}: the processor charged {charges[0]['amount']}, the ledger has {credited}")
    for donation_id in in_ledger:
        donation = donations.get(donation_id)
        if donation is not None and donation["processor"] in accounts and donation_id not in charged:
            report.problem(f"{donation_id}: in the ledger but the processor has no succeeded charge for it")
    report.checked["processor_charges_succeeded"] = len(rows)


async def _check_limits(report: AuditReport, connection: asyncpg.Connection) -> None:
    # What counts toward the limit is what the donor still gives: a refund, or a dispute the campaign lost, gives
    # the room back (the engine removes it from the aggregate), so a donor may then give again. Lost disputes are
    # known from the simulated processor's record when there is one.
    lost_disputes = (
        """(SELECT coalesce(sum(s.amount), 0) FROM simulator.disputes s JOIN simulator.charges ch ON ch.id = s.charge_id
             WHERE ch.donation_id = d.id AND s.status = 'lost')"""
        if await connection.fetchval("SELECT to_regclass('simulator.disputes')") is not None
        else "0"
    )
    over = await connection.fetch(
        f"""SELECT d.campaign, d.election, d.donor_key, c.contribution_limit_minor,
                   sum(d.amount_minor - d.refunded_minor - {lost_disputes}) AS total
              FROM surge.donations d JOIN surge.campaigns c ON c.slug = d.campaign
             WHERE d.status = 'succeeded'
             GROUP BY d.campaign, d.election, d.donor_key, c.contribution_limit_minor
            HAVING sum(d.amount_minor - d.refunded_minor - {lost_disputes}) > c.contribution_limit_minor"""
    )
    for row in over:
        report.problem(
            f"donor {row['donor_key']} gave {row['total']} to {row['campaign']} for {row['election']}, over the "
            f"{row['contribution_limit_minor']} limit"
        )
    open_count = await connection.fetchval(
        "SELECT count(*) FROM surge.donations WHERE status = ANY($1::text[])", list(_OPEN_STATUSES)
    )
    if open_count == 0:
        held = await connection.fetchval("SELECT coalesce(sum(held_minor), 0) FROM surge.contribution_aggregates")
        if held:
            report.problem(f"no donation is open but contribution aggregates still hold {held}")
    report.checked["donors"] = await connection.fetchval("SELECT count(*) FROM surge.contribution_aggregates")


# ---- after a chaos rehearsal: refunds, fees, disputes, webhooks; then the operators' own commands ------------------


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
