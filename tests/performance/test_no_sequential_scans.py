"""No statement that runs per donation or per batch reads a growing table from end to end (issue 11).

The last test starts from an empty database instead and lets the engine grow it (plans made on tiny tables).

A database is pre-filled with a few hundred thousand donations and everything they leave behind (ledger entries
and postings, the processor's charges and events, receipts, refunds, aggregates): a handful of real donations and
a refund go through the real engine first, then those rows are copied set-based (``generate_series``) with fresh
ids, so the filler has exactly the shape the engine writes. Then a batch of donations (succeeded, declined, a
repeat donor, concurrent so that they batch) and a refund go through a real engine, its receipt relay and workers
running, and ``pg_stat_user_tables.seq_scan`` of every growing table must not move.

On a filled database, three cases: statistics present (``ANALYZE`` after the fill: the steady state); none yet
(``fresh``: autovacuum off for the test, a new campaign's first spike before autovacuum's ANALYZE); and ``stale``,
statistics taken while the tables held only the seed, then the tables grown a thousandfold (a freshly grown table).
The planner must pick the indexes in all three. On failure the message names each statement whose plan read a
growing table sequentially, from ``auto_explain`` in the embedded server's log.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from benchmarks.common import ServerLog
from benchmarks.soak import GROWING_TABLES  # one list: what the soak watches is what this test checks
from engine.keys import Role
from tests.e2e.conftest import Surge, donation, running_surge, surge_settings
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

# Tables copied to fill the database, parents before children (foreign keys and the postings' reference trigger).
FILLED_TABLES = (
    "surge.donations",
    "surge.contribution_aggregates",
    "surge.refunds",
    "surge.receipts",
    "surge.processor_events",
    "ledger.entries",
    "ledger.postings",
    "simulator.charges",
    "simulator.refunds",
    "simulator.balance_transactions",
    "simulator.events",
)
SEED_DONATIONS = 24
FILL_DONATIONS = 200_000
ENTRY_ID_STRIDE = 1_000_000  # a copy's entry ids: the seed's plus g times this (seed ids are far below it)
# Ids the engine and the simulator make: a prefix and hex (don_…, pi_…, re_…, evt_…); a copy appends p<g> to each,
# wherever it appears (ids, references, JSON payloads), so the copies' relations hold among themselves.
_ID = r"([a-z]{2,5}_[0-9a-f]{16,})"
BATCH_DONATIONS = 40
ROWS_THAT_MATTER = 1_000


def _settings_overrides() -> dict[str, Any]:
    return {"processor_rate_per_s": 1_000_000.0, "receipt_poll_interval_ms": 50}


async def _seed(surge: Surge) -> tuple[str, dict[Role, str]]:
    """Real rows of every kind: donations (one declined), a refund; receipts sent. Returns a refundable donation."""
    answers = await asyncio.gather(
        *(
            surge.donate(donation(1000 + 100 * n, email=f"seed{n}@example.org", last_name=f"Seed{n}"))
            for n in range(SEED_DONATIONS - 1)
        ),
        surge.donate(donation(700, payment_method="pm_card_chargeDeclined", email="declined@example.org")),
    )
    statuses = sorted(status for status, _ in answers)
    assert statuses.count(201) == SEED_DONATIONS - 1 and statuses.count(402) == 1, statuses
    paid = next(body for status, body in answers if status == 201)
    await _refund(surge, paid["id"], 300, "seed-refund")
    await _receipts_sent(surge)
    return str(paid["id"]), surge.keys


async def _refund(surge: Surge, donation_id: str, amount: int, key: str) -> None:
    response = await surge.client.post(
        f"/v1/donations/{donation_id}/refunds",
        json={"amount": amount},
        headers={**surge.auth(Role.FINANCE), "Idempotency-Key": key},
    )
    assert response.status == 200, await response.text()


async def _receipts_sent(surge: Surge) -> None:
    async def none_pending() -> bool:
        open_count = await surge.pool.fetchval(
            "SELECT (SELECT count(*) FROM surge.receipts WHERE status = 'pending')"
            " + (SELECT count(*) FROM surge.donations WHERE status IN ('queued', 'charging', 'pending'))"
        )
        return open_count == 0

    await wait_until(none_pending, timeout=60, what="every donation settled and every receipt sent")


async def _fill(connection: asyncpg.Connection, copies: int) -> None:
    """Copy every seeded row ``copies`` times, set-based, with fresh ids and times going back one second a copy."""
    for table in FILLED_TABLES:
        schema, name = table.split(".")
        columns = await connection.fetch(
            """SELECT column_name, data_type, is_identity, identity_generation FROM information_schema.columns
                WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position""",
            schema,
            name,
        )
        names, expressions, overriding = [], [], ""
        for column in columns:
            expression = _copy_expression(table, column)
            if expression is None:
                continue
            if column["identity_generation"] == "ALWAYS":
                overriding = "OVERRIDING SYSTEM VALUE"
            names.append(column["column_name"])
            expressions.append(expression)
        await connection.execute(
            f"INSERT INTO {table} ({', '.join(names)}) {overriding} "
            f"SELECT {', '.join(expressions)} FROM {table} t, generate_series(1, $1) g",
            copies,
        )
    # Every posting was copied ``copies`` times: the cached balances follow, so the books still agree.
    await connection.execute("UPDATE ledger.balances SET posted = posted * $1, pending = pending * $1", copies + 1)
    await connection.execute(
        "SELECT setval(pg_get_serial_sequence('ledger.entries', 'id'), (SELECT max(id) FROM ledger.entries))"
    )


def _copy_expression(table: str, column: asyncpg.Record) -> str | None:
    name, kind = column["column_name"], column["data_type"]
    if table == "ledger.entries" and name in ("id", "parent_entry_id"):
        return f"t.{name} + g::bigint * {ENTRY_ID_STRIDE}"
    if table == "ledger.postings" and name == "entry_id":
        return f"t.entry_id + g::bigint * {ENTRY_ID_STRIDE}"
    if column["is_identity"] == "YES":
        return None  # postings and the like: a new id from the sequence
    if name == "api_key_id":
        return "t.api_key_id"  # a real key
    if name in ("idempotency_key", "donor_key", "reference"):
        return f"t.{name} || 'p' || g"
    if name == "client_ip":
        return "t.client_ip + g"  # a donor address each, as real traffic has
    if kind == "text":
        return f"regexp_replace(t.{name}, '{_ID}', '\\1p' || g, 'g')"
    if kind == "jsonb":
        return f"regexp_replace(t.{name}::text, '{_ID}', '\\1p' || g, 'g')::jsonb"
    if kind.startswith("timestamp"):
        return f"t.{name} - make_interval(secs => g)"
    return f"t.{name}"


async def _seq_scans(connection: asyncpg.Connection) -> dict[str, int]:
    """Sequential scans so far of each growing table that holds rows enough to matter (an empty table, such as
    disputes here, is rightly read by a sequential scan of nothing)."""
    rows = await connection.fetch(
        "SELECT schemaname || '.' || relname AS name, seq_scan FROM pg_stat_user_tables"
        " WHERE schemaname || '.' || relname = ANY($1::text[]) AND n_live_tup >= $2",
        list(GROWING_TABLES),
        ROWS_THAT_MATTER,
    )
    return {row["name"]: row["seq_scan"] for row in rows}


async def _flushed_seq_scans(connection: asyncpg.Connection) -> dict[str, int]:
    """The counters once every other backend of this database has exited (a backend reports its statistics when it
    ends, or a second or more after its last transaction): the engine's pool is closed before this is called."""

    async def alone() -> bool:
        others = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'"
        )
        return others == 0

    await wait_until(alone, timeout=30, what="the engine's connections to end")
    await connection.execute("SELECT pg_stat_clear_snapshot()")
    return await _seq_scans(connection)


@pytest.fixture(params=["analyzed", "fresh", "stale"])
async def filled_database(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[str, str, str, dict[Role, str]]]:
    """A database with ~FILL_DONATIONS donations and their rows, autovacuum off, statistics as ``request.param``
    says; yields its URL, a donation that can be refunded, and the statistics case."""
    statistics = request.param
    connection = await asyncpg.connect(database_url)
    try:
        for table in GROWING_TABLES:
            await connection.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    finally:
        await connection.close()
    settings = surge_settings(database_url, tmp_path, **_settings_overrides())
    async with running_surge(database_url, settings) as surge:
        refundable, keys = await _seed(surge)
    connection = await asyncpg.connect(database_url)
    try:
        if statistics == "stale":
            await connection.execute("ANALYZE")
        await _fill(connection, FILL_DONATIONS // SEED_DONATIONS)
        counted = await connection.fetchval("SELECT count(*) FROM surge.donations")
        assert counted >= FILL_DONATIONS
        if statistics == "analyzed":
            await connection.execute("ANALYZE")
    finally:
        await connection.close()
    yield database_url, refundable, statistics, keys


async def test_a_batch_of_donations_and_a_refund_scan_no_growing_table(
    filled_database: tuple[str, str, str, dict[Role, str]], tmp_path: Path
) -> None:
    database_url, refundable, statistics, keys = filled_database
    connection = await asyncpg.connect(database_url)
    try:
        log = await ServerLog.explaining(connection)  # every plan of the engine's sessions, for the message
        before = await _seq_scans(connection)
        settings = surge_settings(database_url, tmp_path, **_settings_overrides())
        async with running_surge(database_url, settings) as surge:
            surge.keys = keys  # made by the seed's bootstrap (a bootstrap makes keys only on an empty database)
            await _drive_batch(surge, refundable)
        after = await _flushed_seq_scans(connection)
    finally:
        await connection.close()
    scanned = {table: after[table] - before[table] for table in before if after[table] > before[table]}
    # The fill took (the in-process simulator sends no webhooks: processor_events stays empty here).
    assert set(before) >= {"surge.donations", "ledger.entries", "ledger.postings", "simulator.charges"}, before
    statements = log.sequential_scans({table.split(".")[1] for table in scanned}) if scanned else []
    assert not scanned, f"sequential scans of growing tables ({statistics} statistics): {scanned}\n" + "\n".join(
        statements
    )


async def _drive_batch(surge: Surge, refundable: str) -> None:
    """Donations at once (so that intake and settlement batch), a repeat donor, declines; a refund; receipts."""
    bodies = [donation(2000 + n, email=f"batch{n}@example.org", last_name=f"Batch{n}") for n in range(BATCH_DONATIONS)]
    bodies += [donation(1500, email="seed0@example.org", last_name="Seed0")]  # a donor who gave before
    bodies += [donation(900, payment_method="pm_card_chargeDeclined", email=f"no{n}@example.org") for n in range(3)]
    answers = await asyncio.gather(*(surge.donate(body, f"batch-{n}") for n, body in enumerate(bodies)))
    statuses = sorted(status for status, _ in answers)
    assert statuses.count(201) == BATCH_DONATIONS + 1 and statuses.count(402) == 3, statuses
    await _refund(surge, refundable, 200, "batch-refund")
    paid = next(body for status, body in answers if status == 201)
    await _refund(surge, paid["id"], 2000 + 0, "batch-refund-full")
    await _receipts_sent(surge)


# -- a database that grows under a running engine ---------------------------------------------------------------------

GROWN_DONATIONS = 1_500
GROWN_WAVE = 50


async def test_a_database_grown_by_the_engine_itself_is_not_scanned(database_url: str, tmp_path: Path) -> None:
    """From empty, as on a new campaign's first night: the engine plans its statements on tiny tables, the tables
    grow past a thousand donations (no ANALYZE in between: autovacuum off, as in its first minute), and the next
    waves must still be index lookups. (Before the engine's planner settings, engine/database.py PLANNER_SETTINGS,
    and the per-reference probe in ledger/posting.py, this scanned ledger.entries in two runs of three.)"""
    connection = await asyncpg.connect(database_url)
    try:
        for table in GROWING_TABLES:
            await connection.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        log = await ServerLog.explaining(connection)
        settings = surge_settings(database_url, tmp_path, **_settings_overrides())
        async with running_surge(database_url, settings) as surge:
            for wave in range(GROWN_DONATIONS // GROWN_WAVE):
                await _wave(surge, wave)
            before = await _seq_scans(connection)
            log = ServerLog(log.path)  # the plans from here on
            for wave in range(GROWN_DONATIONS // GROWN_WAVE, GROWN_DONATIONS // GROWN_WAVE + 3):
                await _wave(surge, wave)
            await _receipts_sent(surge)
        after = await _flushed_seq_scans(connection)
    finally:
        await connection.close()
    assert {"surge.donations", "ledger.entries"} <= set(before), before
    scanned = {table: after[table] - before[table] for table in before if after[table] > before[table]}
    statements = log.sequential_scans({table.split(".")[1] for table in scanned}) if scanned else []
    assert not scanned, f"sequential scans of grown tables: {scanned}\n" + "\n".join(statements)


async def _wave(surge: Surge, wave: int) -> None:
    """A wave of donations at once (they batch), every donor new."""
    bodies = [
        (f"wave{wave}-{n}", donation(1000 + n, email=f"w{wave}n{n}@example.org", last_name=f"Wave{wave}x{n}"))
        for n in range(GROWN_WAVE)
    ]
    answers = await asyncio.gather(*(surge.donate(body, key) for key, body in bodies))
    assert all(status == 201 for status, _ in answers), answers[:3]
