"""Runs and exceptions in the database: recording a run (exceptions upserted by key), and reading them back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg
import orjson

from engine.finance.reconcile.adjustments import Adjustment, adjustment_reference
from engine.finance.reconcile.model import Discrepancy, ExceptionKind, Reconciliation, json_object


@dataclass(frozen=True, slots=True)
class RecordedRun:
    id: int
    exception_ids: dict[str, int]  # discrepancy key → exception id


async def record_run(
    connection: asyncpg.Connection,
    processor: str,
    result: Reconciliation,
    *,
    requested_by: str,
    started_at: datetime,
    extra_detail: Mapping[str, Mapping[str, Any]] | None = None,
) -> RecordedRun:
    """Record the run, upsert its exceptions by key, and clear the open ones in its window it did not find."""
    extra_detail = extra_detail or {}
    async with connection.transaction():
        run_id = await connection.fetchval(
            """INSERT INTO finance.reconciliation_runs (processor, window_from, window_to, slack_s, requested_by,
                   started_at, matched, exception_count, summary, result_digest)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::jsonb, $10) RETURNING id""",
            processor,
            result.window.start,
            result.window.end,
            int(result.window.slack.total_seconds()),
            requested_by,
            started_at,
            len(result.matched),
            len(result.discrepancies),
            orjson.dumps(result.summary()).decode(),
            result.digest(),
        )
        found = result.discrepancies
        rows = await connection.fetch(
            """INSERT INTO finance.reconciliation_exceptions AS x (processor, key, kind, subject, currency,
                   processor_amount, ledger_amount, occurred_at, detail, first_run_id, last_run_id)
               SELECT $1, d.key, d.kind, d.subject, d.currency, d.processor_amount, d.ledger_amount, d.occurred_at,
                      d.detail::jsonb, $2, $2
                 FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::bigint[],
                             $9::timestamptz[], $10::text[])
                      AS d(key, kind, subject, currency, processor_amount, ledger_amount, occurred_at, detail)
               ON CONFLICT (processor, key) DO UPDATE
                  SET last_run_id = EXCLUDED.last_run_id, cleared_run_id = NULL, detail = EXCLUDED.detail
               RETURNING x.id, x.key""",
            processor,
            run_id,
            [d.key for d in found],
            [d.kind.value for d in found],
            [d.subject for d in found],
            [d.currency for d in found],
            [d.processor_amount for d in found],
            [d.ledger_amount for d in found],
            [d.occurred_at for d in found],
            [_detail_json(d, extra_detail.get(d.key, {})) for d in found],
        )
        ids = {row["key"]: row["id"] for row in rows}
        await connection.execute(
            """INSERT INTO finance.reconciliation_run_exceptions (run_id, exception_id)
               SELECT $1, unnest($2::bigint[])""",
            run_id,
            list(ids.values()),
        )
        await connection.execute(
            """UPDATE finance.reconciliation_exceptions SET cleared_run_id = $2
                WHERE processor = $1 AND cleared_run_id IS NULL AND occurred_at >= $3 AND occurred_at < $4
                  AND id <> ALL($5::bigint[])""",
            processor,
            run_id,
            result.window.start,
            result.window.end,
            list(ids.values()),
        )
    return RecordedRun(run_id, ids)


def _detail_json(discrepancy: Discrepancy, extra: Mapping[str, Any]) -> str:
    return orjson.dumps({**discrepancy.as_json(), **extra}).decode()


# ---- reading runs and exceptions ------------------------------------------------------------------------------------


class ExceptionStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"  # an adjusting entry was posted for it
    CLEARED = "cleared"  # a later run over its time no longer found it


@dataclass(frozen=True, slots=True)
class ExceptionView:
    id: int
    processor: str
    kind: ExceptionKind
    subject: str
    currency: str | None
    processor_amount: int | None
    ledger_amount: int | None
    occurred_at: datetime
    detail: Mapping[str, Any]
    first_run_id: int
    last_run_id: int
    cleared_run_id: int | None
    adjustment: Adjustment | None

    @property
    def status(self) -> ExceptionStatus:
        if self.adjustment is not None:
            return ExceptionStatus.RESOLVED
        return ExceptionStatus.OPEN if self.cleared_run_id is None else ExceptionStatus.CLEARED

    @property
    def difference(self) -> int | None:
        if self.processor_amount is None and self.ledger_amount is None:
            return None
        return (self.processor_amount or 0) - (self.ledger_amount or 0)


@dataclass(frozen=True, slots=True)
class RunView:
    id: int
    processor: str
    window_from: datetime
    window_to: datetime
    slack_s: int
    requested_by: str
    started_at: datetime
    finished_at: datetime
    matched: int
    exception_count: int
    summary: Mapping[str, Any]
    result_digest: bytes
    same_result_as: int | None  # the latest earlier run of this window that found exactly the same
    exceptions: list[ExceptionView]


_EXCEPTION_COLUMNS = """x.id, x.processor, x.kind, x.subject, x.currency, x.processor_amount, x.ledger_amount,
       x.occurred_at, x.detail::text AS detail, x.first_run_id, x.last_run_id, x.cleared_run_id,
       a.id AS adjustment_id, a.entry_id, a.resolved_by, a.resolved_at, a.memo"""


def _exception_view(row: asyncpg.Record) -> ExceptionView:
    adjustment = None
    if row["adjustment_id"] is not None:
        adjustment = Adjustment(
            row["adjustment_id"],
            row["id"],
            row["entry_id"],
            adjustment_reference(row["processor"], row["id"]),
            row["resolved_by"],
            row["resolved_at"],
            row["memo"],
        )
    return ExceptionView(
        row["id"],
        row["processor"],
        ExceptionKind(row["kind"]),
        row["subject"],
        row["currency"].strip() if row["currency"] else None,
        row["processor_amount"],
        row["ledger_amount"],
        row["occurred_at"],
        json_object(row["detail"]),
        row["first_run_id"],
        row["last_run_id"],
        row["cleared_run_id"],
        adjustment,
    )


async def exception_view(connection: asyncpg.Connection, exception_id: int) -> ExceptionView | None:
    row = await connection.fetchrow(
        f"""SELECT {_EXCEPTION_COLUMNS} FROM finance.reconciliation_exceptions x
             LEFT JOIN finance.reconciliation_adjustments a ON a.exception_id = x.id WHERE x.id = $1""",
        exception_id,
    )
    return None if row is None else _exception_view(row)


async def list_exceptions(
    connection: asyncpg.Connection,
    *,
    processor: str | None = None,
    status: ExceptionStatus | None = None,
    limit: int = 500,
) -> list[ExceptionView]:
    rows = await connection.fetch(
        f"""SELECT {_EXCEPTION_COLUMNS} FROM finance.reconciliation_exceptions x
             LEFT JOIN finance.reconciliation_adjustments a ON a.exception_id = x.id
            WHERE ($1::text IS NULL OR x.processor = $1)
              AND ($2::text IS NULL
                   OR ($2 = 'resolved' AND a.id IS NOT NULL)
                   OR ($2 = 'open' AND a.id IS NULL AND x.cleared_run_id IS NULL)
                   OR ($2 = 'cleared' AND a.id IS NULL AND x.cleared_run_id IS NOT NULL))
            ORDER BY x.occurred_at DESC, x.id DESC LIMIT $3""",
        processor,
        status.value if status else None,
        limit,
    )
    return [_exception_view(row) for row in rows]


_RUN_COLUMNS = """r.id, r.processor, r.window_from, r.window_to, r.slack_s, r.requested_by, r.started_at,
       r.finished_at, r.matched, r.exception_count, r.summary::text AS summary, r.result_digest,
       (SELECT max(p.id) FROM finance.reconciliation_runs p
         WHERE p.processor = r.processor AND p.window_from = r.window_from AND p.window_to = r.window_to
           AND p.result_digest = r.result_digest AND p.id < r.id) AS same_result_as"""


async def run_view(connection: asyncpg.Connection, run_id: int) -> RunView | None:
    row = await connection.fetchrow(f"SELECT {_RUN_COLUMNS} FROM finance.reconciliation_runs r WHERE r.id = $1", run_id)
    if row is None:
        return None
    exceptions = await connection.fetch(
        f"""SELECT {_EXCEPTION_COLUMNS} FROM finance.reconciliation_run_exceptions re
             JOIN finance.reconciliation_exceptions x ON x.id = re.exception_id
             LEFT JOIN finance.reconciliation_adjustments a ON a.exception_id = x.id
            WHERE re.run_id = $1 ORDER BY x.occurred_at, x.id""",
        run_id,
    )
    return _run_view(row, [_exception_view(x) for x in exceptions])


def _run_view(row: asyncpg.Record, exceptions: list[ExceptionView]) -> RunView:
    return RunView(
        row["id"],
        row["processor"],
        row["window_from"],
        row["window_to"],
        row["slack_s"],
        row["requested_by"],
        row["started_at"],
        row["finished_at"],
        row["matched"],
        row["exception_count"],
        json_object(row["summary"]),
        row["result_digest"],
        row["same_result_as"],
        exceptions,
    )


async def list_runs(connection: asyncpg.Connection, *, processor: str | None = None, limit: int = 50) -> list[RunView]:
    """Newest first, without their exceptions."""
    rows = await connection.fetch(
        f"""SELECT {_RUN_COLUMNS} FROM finance.reconciliation_runs r
             WHERE ($1::text IS NULL OR r.processor = $1) ORDER BY r.id DESC LIMIT $2""",
        processor,
        limit,
    )
    return [_run_view(row, []) for row in rows]


async def latest_run(connection: asyncpg.Connection) -> RunView | None:
    run_id = await connection.fetchval("SELECT max(id) FROM finance.reconciliation_runs")
    return None if run_id is None else await run_view(connection, run_id)


async def open_exception_count(connection: asyncpg.Connection) -> int:
    count: int = await connection.fetchval(
        """SELECT count(*) FROM finance.reconciliation_exceptions x
            WHERE x.cleared_run_id IS NULL
              AND NOT EXISTS (SELECT 1 FROM finance.reconciliation_adjustments a WHERE a.exception_id = x.id)"""
    )
    return count
