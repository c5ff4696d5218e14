"""`surge loadtest --profile renewals`: renewal day. Many plans fall due at the same instant against a processor
capped at a realistic rate, with soft and hard declines and installments past the donor's limit mixed in.

The plans are written straight into a fresh database (saved methods, donors, plans all anchored at one instant a
few seconds after the engine is up), then the engine's scheduler does the rest. Measured: installments enqueued
per second (from the due instant until every installment has its donation or its skip) and the time to drain
(until every installment is final, retries included). The audit proves each due installment was charged exactly
once (one succeeded donation, one processor charge, one ledger entry) or ended for a stated reason (declined after
its retries, a hard decline never retried, skipped past the limit); no donor passed the limit; reconciliation and
``surge ledger check`` are clean.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from engine.recurring.plans import ensure_recurring_key
from loadtest.audit import AuditReport
from loadtest.audit_money import audit_commands
from loadtest.engine_process import EngineProcess, embedded_database_in_folder, prepare_database

LIMIT_MINOR = 350_000  # the demo campaign's per-election limit
CARDS = {  # share of plans per card: most renew, some decline softly (retried), a few hard (never retried)
    "pm_card_visa": 0.93,
    "pm_card_chargeDeclinedInsufficientFunds": 0.04,
    "pm_card_chargeDeclinedStolenCard": 0.01,
}
OVER_LIMIT_SHARE = 0.02  # plans whose amount would pass the donor's election limit: skipped with the reason


@dataclass(frozen=True)
class RenewalsConfig:
    plans: int = 10_000
    processor_rate_per_s: float = 100.0
    seed: int = 1
    lead_s: float = 3.0  # the due instant, after the engine is ready
    drain_timeout_s: float = 1_800.0
    retry_days: str = "0.00005,0.00005"  # two retries ~4 s apart: the run drains with dunning exercised
    report_folder: Path = Path("loadtest-report")
    engine_environment: dict[str, str] = field(default_factory=dict)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("renewals (--profile renewals)")
    group.add_argument("--plans", type=int, default=RenewalsConfig.plans, help="plans due at once (default 10000)")


def config_from_args(args: argparse.Namespace) -> RenewalsConfig:
    environment = dict(item.split("=", 1) for item in args.engine_env)
    return RenewalsConfig(
        plans=args.plans,
        processor_rate_per_s=args.rate or RenewalsConfig.processor_rate_per_s,
        seed=args.seed,
        drain_timeout_s=args.drain_timeout,
        report_folder=args.report_dir,
        engine_environment=environment,
    )


def run_command(args: argparse.Namespace) -> int:
    results = asyncio.run(run_renewals(config_from_args(args)))
    return 0 if results["audit"]["ok"] else 1


async def seed_plans(
    connection: asyncpg.Connection, config: RenewalsConfig, lead_s: float
) -> tuple[dict[str, int], float]:
    """Plans all due ``lead_s`` after they are written (returned with that instant): one saved method and one
    donor each (distinct donors, so only the plans made to pass it meet the limit)."""
    rng = random.Random(config.seed)
    cards, amounts, mix = [], [], {card: 0 for card in CARDS}
    for _ in range(config.plans):
        card = rng.choices(list(CARDS), weights=list(CARDS.values()))[0]
        over = rng.random() < OVER_LIMIT_SHARE
        cards.append(card)
        amounts.append(LIMIT_MINOR + 100 if over else rng.choice((500, 1_000, 2_500, 5_000)))
        mix[card] += 1
    mix["over_limit"] = sum(1 for a in amounts if a > LIMIT_MINOR)
    await ensure_recurring_key(connection)
    # Two set-based statements joined on the saved method's primary key (a join on a CTE's rows would be
    # quadratic), then one UPDATE that makes every plan due at the same instant.
    await connection.execute(
        """INSERT INTO surge.saved_payment_methods (id, processor, customer_reference, payment_method_reference,
                                                    brand, last4, exp_month, exp_year, donor)
           SELECT 'spm_renew_' || n, 'simulated', 'cus_renew_' || n, ($1::text[])[n], 'visa', '4242', 12, 2034,
                  jsonb_build_object('first_name', 'Renewer' || n, 'last_name', 'Doe', 'email',
                                     'renewer' || n || '@example.org', 'address_line1', '1 Main St',
                                     'city', 'Springfield', 'state', 'IL', 'postal_code', '62701',
                                     'country', 'US', 'employer', 'Acme', 'occupation', 'Engineer',
                                     'citizenship_attested', true)
             FROM generate_series(1, cardinality($1::text[])) AS n""",
        cards,
    )
    await connection.execute(
        """INSERT INTO surge.recurring_plans (id, campaign, saved_method_id, amount_minor, currency, interval, donor,
                                              donor_email, status, anchor_at, next_due_at)
           SELECT 'plan_renew_' || n, 'demo', m.id, ($1::bigint[])[n], 'USD', 'month', m.donor, m.donor->>'email',
                  'active', 'infinity', 'infinity'
             FROM generate_series(1, cardinality($1::bigint[])) AS n
             JOIN surge.saved_payment_methods m ON m.id = 'spm_renew_' || n""",
        amounts,
    )
    due_epoch_s = time.time() + lead_s
    await connection.execute(
        "UPDATE surge.recurring_plans SET anchor_at = to_timestamp($1), next_due_at = to_timestamp($1)",
        due_epoch_s,
    )
    return mix, due_epoch_s


async def _counts(connection: asyncpg.Connection) -> asyncpg.Record:
    return await connection.fetchrow(
        """SELECT count(*) AS made,
                  count(*) FILTER (WHERE donation_id IS NOT NULL OR attempts > 0
                                         AND status IN ('succeeded', 'failed', 'skipped', 'retrying')) AS enqueued,
                  count(*) FILTER (WHERE status IN ('succeeded', 'failed', 'skipped')) AS final
             FROM surge.recurring_installments"""
    )


async def run_renewals(config: RenewalsConfig, output: Any = print) -> dict[str, Any]:
    with embedded_database_in_folder() as (database_url, data_folder):
        await prepare_database(database_url)
        environment = {
            "SURGE_PROCESSOR_RATE_PER_S": str(config.processor_rate_per_s),
            "SURGE_SIM_CHARGES_PER_S_MAX": str(config.processor_rate_per_s),
            "SURGE_RECURRING_RETRY_DAYS": config.retry_days,
            "SURGE_RECURRING_POLL_MS": "200",
            "SURGE_HOME": str(data_folder.parent),
            **config.engine_environment,
        }
        engine = EngineProcess(database_url, config.report_folder / "engine.log", environment)
        connection = await asyncpg.connect(database_url)
        try:
            await engine.start()
            mix, due = await seed_plans(connection, config, config.lead_s)
            output(f"renewals: {config.plans} plans due at once, processor capped at {config.processor_rate_per_s}/s")
            enqueued_s, drained_s = await _watch(connection, config, due, output)
            audit = await audit_renewals(connection, config.plans)
            await engine.stop()
            await audit_commands(audit, database_url, due - 60, environment)
        finally:
            await connection.close()
            await engine.stop()
    results = {
        "profile": "renewals",
        "plans": config.plans,
        "processor_rate_per_s": config.processor_rate_per_s,
        "mix": mix,
        "installments_enqueued_per_s": round(config.plans / enqueued_s, 1) if enqueued_s else None,
        "enqueue_s": round(enqueued_s, 2) if enqueued_s else None,
        "drain_s": round(drained_s, 2) if drained_s else None,
        "audit": audit.as_json(),
    }
    config.report_folder.mkdir(parents=True, exist_ok=True)
    (config.report_folder / "renewals.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    output(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    return results


async def _watch(
    connection: asyncpg.Connection, config: RenewalsConfig, due: float, output: Any
) -> tuple[float | None, float | None]:
    enqueued_s: float | None = None
    last_print = 0.0
    while time.time() < due + config.drain_timeout_s:
        counts = await _counts(connection)
        now = time.time()
        if enqueued_s is None and counts["enqueued"] >= config.plans:
            enqueued_s = now - due
        if counts["final"] >= config.plans:
            return enqueued_s, now - due
        if now - last_print >= 5:
            output(
                f"  +{now - due:6.1f} s: {counts['made']} due, {counts['enqueued']} enqueued, {counts['final']} final"
            )
            last_print = now
        await asyncio.sleep(0.25)
    return enqueued_s, None


async def audit_renewals(connection: asyncpg.Connection, plans: int) -> AuditReport:
    report = AuditReport()
    # Grouped once per table (not a subquery per plan): the audit stays linear at 100,000 plans.
    rows = await connection.fetch(
        """WITH gifts AS (
               SELECT d.metadata->>'recurring_plan' AS plan_id,
                      count(*) FILTER (WHERE d.status = 'succeeded') AS succeeded,
                      count(*) FILTER (WHERE d.status IN ('queued', 'charging', 'pending')) AS undecided
                 FROM surge.donations d WHERE d.api_key_id = 'key_recurring' GROUP BY 1),
           charges AS (
               SELECT d.metadata->>'recurring_plan' AS plan_id, count(*) AS charged
                 FROM simulator.charges c JOIN surge.donations d ON d.id = c.donation_id
                WHERE c.status = 'succeeded' AND d.api_key_id = 'key_recurring' GROUP BY 1),
           entries AS (
               SELECT d.metadata->>'recurring_plan' AS plan_id, count(*) AS entries
                 FROM ledger.entries e JOIN surge.donations d ON d.id = e.reference
                WHERE e.kind = 'transfer' AND d.api_key_id = 'key_recurring' GROUP BY 1)
           SELECT i.plan_id, i.status, i.outcome_reason, i.attempts, m.payment_method_reference AS card,
                  p.amount_minor, coalesce(g.succeeded, 0) AS succeeded, coalesce(g.undecided, 0) AS undecided,
                  coalesce(c.charged, 0) AS charged, coalesce(e.entries, 0) AS entries
             FROM surge.recurring_installments i
             JOIN surge.recurring_plans p ON p.id = i.plan_id
             JOIN surge.saved_payment_methods m ON m.id = p.saved_method_id
             LEFT JOIN gifts g ON g.plan_id = i.plan_id
             LEFT JOIN charges c ON c.plan_id = i.plan_id
             LEFT JOIN entries e ON e.plan_id = i.plan_id"""
    )
    report.checked["installments"] = len(rows)
    if len(rows) != plans:
        report.problem(f"{plans} plans were due, {len(rows)} installments were made")
    outcomes: dict[str, int] = {}
    for row in rows:
        plan, status = row["plan_id"], row["status"]
        outcomes[f"{status}:{row['outcome_reason']}" if row["outcome_reason"] else status] = (
            outcomes.get(f"{status}:{row['outcome_reason']}" if row["outcome_reason"] else status, 0) + 1
        )
        if row["undecided"]:
            report.problem(f"{plan}: a donation is still undecided")
        if status == "succeeded":
            if (row["succeeded"], row["charged"], row["entries"]) != (1, 1, 1):
                report.problem(
                    f"{plan}: succeeded with {row['succeeded']} donations, {row['charged']} charges, "
                    f"{row['entries']} ledger entries"
                )
        elif status in ("failed", "skipped"):
            if row["succeeded"] or row["charged"]:
                report.problem(f"{plan}: {status} but charged")
            if not row["outcome_reason"]:
                report.problem(f"{plan}: {status} without a reason")
            if row["outcome_reason"] == "contribution_limit_exceeded" and row["amount_minor"] <= LIMIT_MINOR:
                report.problem(f"{plan}: skipped for the limit below it")
            if row["card"] == "pm_card_chargeDeclinedStolenCard" and row["attempts"] != 1:
                report.problem(f"{plan}: a hard decline was retried ({row['attempts']} attempts)")
        else:
            report.problem(f"{plan}: left {status}")
    report.checked.update(outcomes)
    over = await connection.fetchval(
        "SELECT count(*) FROM surge.contribution_aggregates WHERE posted_minor + held_minor > limit_minor"
    )
    if over:
        report.problem(f"{over} donors past their limit")
    return report
