"""Migration 0006 moves finance's reconciliation tables from the ledger's schema to their own, in place: a database
at version 5 with reconciliation history migrates forward keeping every row, its identities and its guards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from engine import database
from engine.finance.reconcile.history import run_view
from ledger.accounts import AccountDirectory, AccountType, ensure_account
from ledger.entries import transfer
from ledger.money import Money
from ledger.posting import post_entries_or_raise
from tests.migrating import empty_database, migrate_up_to  # noqa: F401  (a fixture)

TABLES = (
    "reconciliation_runs",
    "reconciliation_exceptions",
    "reconciliation_run_exceptions",
    "reconciliation_adjustments",
)
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def write_history(connection: asyncpg.Connection) -> None:
    """One run that found one exception, resolved by an adjusting entry — written as version 5 had them."""
    await ensure_account(connection, "clearing:simulated:USD", AccountType.ASSET, "USD")
    await ensure_account(connection, "fees:simulated:USD", AccountType.EXPENSE, "USD")
    adjusting = transfer(
        "reconcile:simulated:1", debit="fees:simulated:USD", credit="clearing:simulated:USD", money=Money(30, "USD")
    )
    async with connection.transaction():
        await post_entries_or_raise(connection, AccountDirectory(), [adjusting])
    await connection.execute(
        """INSERT INTO ledger.reconciliation_runs (processor, window_from, window_to, slack_s, requested_by,
               started_at, matched, exception_count, summary, result_digest)
           VALUES ('simulated', $1, $2, 600, 'key:fin_1', $1, 3, 1, '{"USD": {"processor_fees": 175}}', '\\x01')""",
        T0,
        T0 + timedelta(hours=1),
    )
    await connection.execute(
        """INSERT INTO ledger.reconciliation_exceptions (processor, key, kind, subject, currency, processor_amount,
               ledger_amount, occurred_at, detail, first_run_id, last_run_id)
           VALUES ('simulated', 'fee_mismatch|charge:don_1|USD', 'fee_mismatch', 'charge:don_1', 'USD', 175, 145,
                   $1, '{"donation": "don_1"}', 1, 1)""",
        T0 + timedelta(minutes=5),
    )
    await connection.execute("INSERT INTO ledger.reconciliation_run_exceptions (run_id, exception_id) VALUES (1, 1)")
    await connection.execute(
        """INSERT INTO ledger.reconciliation_adjustments (exception_id, entry_id, resolved_by, memo)
           SELECT 1, id, 'ana', 'fee booked short' FROM ledger.entries WHERE reference = 'reconcile:simulated:1'"""
    )


async def schemas_of(connection: asyncpg.Connection) -> dict[str, str]:
    rows = await connection.fetch(
        "SELECT tablename, schemaname FROM pg_tables WHERE tablename = ANY($1::text[])", list(TABLES)
    )
    return {row["tablename"]: row["schemaname"] for row in rows}


async def test_a_version_5_database_moves_its_reconciliation_history_to_the_finance_schema(
    empty_database: str,  # noqa: F811  (the fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connection = await asyncpg.connect(empty_database)
    try:
        await migrate_up_to(connection, 5, monkeypatch)
        assert await schemas_of(connection) == dict.fromkeys(TABLES, "ledger")
        await write_history(connection)

        applied = await database.migrate(connection)

        # Later migrations apply after it; this test is about 0006.
        assert [(m.version, m.name) for m in applied if m.version <= 6] == [(6, "finance_schema")]
        assert await schemas_of(connection) == dict.fromkeys(TABLES, "finance")
        for table in TABLES:
            assert await connection.fetchval(f"SELECT count(*) FROM finance.{table}") == 1, table
        run = await run_view(connection, 1)
        assert run is not None and (run.requested_by, run.matched, run.summary) == (
            "key:fin_1",
            3,
            {"USD": {"processor_fees": 175}},
        )
        [exception] = run.exceptions
        assert (exception.subject, exception.processor_amount, exception.ledger_amount) == ("charge:don_1", 175, 145)
        assert exception.adjustment is not None and exception.adjustment.memo == "fee booked short"
        assert exception.adjustment.entry_reference == "reconcile:simulated:1"
        # The identity goes on from where it was, and history is still append-only.
        next_id = await connection.fetchval(
            """INSERT INTO finance.reconciliation_runs (processor, window_from, window_to, slack_s, requested_by,
                   started_at, matched, exception_count, summary, result_digest)
               SELECT processor, window_from, window_to, slack_s, requested_by, started_at, 0, 0, '{}', '\\x02'
                 FROM finance.reconciliation_runs WHERE id = 1
               RETURNING id"""
        )
        assert next_id == 2
        for table in ("reconciliation_runs", "reconciliation_run_exceptions", "reconciliation_adjustments"):
            with pytest.raises(asyncpg.PostgresError, match=f"finance.{table} is append-only") as refused:
                await connection.execute(f"DELETE FROM finance.{table}")
            assert refused.value.sqlstate == "SG002"
        assert await database.migrate(connection) == []
    finally:
        await connection.close()
