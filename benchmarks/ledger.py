"""The canonical ledger benchmark: group-committed two-leg transfers against one transaction per transfer.

    uv run python -m benchmarks.ledger

No arguments, a fixed seed, about 30 s. A fresh embedded PostgreSQL (temporary folder, deleted at the end) with
its durability defaults (``synchronous_commit`` on, fsync on) holds 5,000 accounts; each transfer debits one and
credits another, both drawn from a Zipf distribution, so that a few hot accounts (a campaign's revenue account, the
processor's clearing account) are touched by a large share of transfers.

1. Baseline: one transaction per transfer, as most PostgreSQL ledgers do it — lock both balance rows in id order
   (SELECT … FOR UPDATE), insert the entry and its postings, update both balances, commit — from a bounded number of
   concurrent connections.
2. Group commit: many concurrent clients (asyncio tasks in this process) each build a transfer with
   ``ledger.entries.transfer`` and await ``GroupCommitter.submit``; the batcher commits them with
   ``ledger.posting.post_entries``. Latency is per transfer, from submit to result.
3. The ledger check (``ledger.check.check_ledger``) re-derives every balance from the postings; the benchmark exits
   non-zero unless it passes.

The benchmark process and PostgreSQL share the machine's cores: client-side work (building requests, futures, the
event loop) is part of the measurement, and the CPU split between the two is reported.
Results: ``benchmarks/results/ledger.json``.
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import itertools
import random
import sys
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks.common import (
    CpuMeter,
    distribution,
    machine_details,
    postmaster_pid,
    print_table,
    run_in_temporary_folder,
    write_results,
)
from engine import database
from engine.database import create_pool, embedded_server
from ledger.accounts import AccountDirectory
from ledger.batcher import BatcherLimits, GroupCommitter
from ledger.check import check_ledger
from ledger.entries import EntryOutcome, EntryRequest, EntryResult, transfer
from ledger.money import Money
from ledger.posting import post_entries
from toolkit.latency_histogram import LatencyHistogram

SEED = 20_260_601
ACCOUNT_COUNT = 5_000
ZIPF_EXPONENT = 1.0  # rank r is drawn with weight 1 / r**s: the classic Zipf law
CURRENCY = "USD"
AMOUNT_MINOR_MIN = 100
AMOUNT_MINOR_MAX = 50_000
WORKLOAD_SIZE = 1 << 18  # pre-drawn (debit, credit, amount) triples, reused cyclically with fresh references

CLIENT_COUNT = 1_000
# Half the clients a batch: with a closed loop of clients, a batch as large as the client count would leave the second
# committer idle (one transaction holds every client), and the two would commit one after the other.
BATCHER_LIMITS = BatcherLimits(batch_size_max=CLIENT_COUNT // 2, committers=2)
BATCHED_WARMUP_S = 2.0
BATCHED_DURATION_S = 12.0

BASELINE_CONNECTION_COUNT = 32
BASELINE_WARMUP_S = 1.0
BASELINE_DURATION_S = 6.0

# CPython collects its youngest generation every 700 net allocations. With a thousand transfers in flight, every
# collection finds them alive and promotes them, and the older generations get scanned again and again: ~10-15 % of
# this process's CPU, measured. A long-running engine process can raise the threshold the same way at start-up.
GC_GENERATION0_THRESHOLD = 50_000
NOISE_CORES_MAX = 0.1  # CPU used by processes outside the benchmark beyond which the run is flagged as disturbed
TARGET_TRANSFERS_PER_S = 30_000
TARGET_RATIO = 10.0

_POSTGRES_SETTINGS = (
    "synchronous_commit",
    "fsync",
    "wal_sync_method",
    "full_page_writes",
    "shared_buffers",
    "max_wal_size",
    "checkpoint_timeout",
    "wal_buffers",
)


@dataclass(frozen=True, slots=True)
class Workload:
    """The transfers to run, drawn once from the seed; both runs cycle through the same sequence."""

    codes: list[str]
    account_ids: dict[str, int]
    triples: list[tuple[str, str, int]]
    hot_account_share: float  # transfers that touch the hottest account

    def request(self, number: int, prefix: str) -> EntryRequest:
        debit, credit, amount = self.triples[number % len(self.triples)]
        return transfer(f"{prefix}-{number}", debit=debit, credit=credit, money=Money(amount, CURRENCY))


@dataclass
class Window:
    """The measured part of a run: completions and latencies between the end of the warm-up and the stop."""

    measuring: bool = False
    stopping: bool = False
    # Raw latencies, put into the histogram after the run: hdrh records in pure Python (~2 us a value), which
    # would otherwise be charged to the system under test.
    latencies_ns: array[int] = field(default_factory=lambda: array("q"))
    unexpected: Counter[str] = field(default_factory=Counter)

    @property
    def completed(self) -> int:
        return len(self.latencies_ns)

    def record(self, started_ns: int, outcome: EntryOutcome) -> None:
        if outcome is not EntryOutcome.CREATED:
            self.unexpected[outcome.value] += 1
        if self.measuring:
            self.latencies_ns.append(time.perf_counter_ns() - started_ns)

    def latency(self) -> LatencyHistogram:
        histogram = LatencyHistogram()
        histogram.record_all_ns(self.latencies_ns)
        return histogram


@dataclass
class RunResult:
    name: str
    transfers_per_s: float
    elapsed_s: float
    window: Window
    latency_ms: dict[str, float]
    cpu: dict[str, float]
    database: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Server:
    url: str
    postmaster_pid: int | None  # for the CPU split between the benchmark and PostgreSQL


def draw_workload(codes: list[str], account_ids: dict[str, int]) -> Workload:
    rng = random.Random(SEED)
    cumulative = list(itertools.accumulate(1 / rank**ZIPF_EXPONENT for rank in range(1, len(codes) + 1)))
    total = cumulative[-1]
    hottest = codes[0]
    triples = []
    for _ in range(WORKLOAD_SIZE):
        debit = codes[bisect.bisect(cumulative, rng.random() * total)]
        credit = debit
        while credit == debit:
            credit = codes[bisect.bisect(cumulative, rng.random() * total)]
        triples.append((debit, credit, rng.randint(AMOUNT_MINOR_MIN, AMOUNT_MINOR_MAX)))
    hot = sum(1 for debit, credit, _ in triples if hottest in (debit, credit)) / len(triples)
    return Workload(codes, account_ids, triples, hot)


async def create_accounts(connection: asyncpg.Connection) -> tuple[list[str], dict[str, int]]:
    # Codes in rank order: bench:0000 is the hottest account.
    codes = [f"bench:{rank:04d}" for rank in range(ACCOUNT_COUNT)]
    rows = await connection.fetch(
        """WITH created AS (
               INSERT INTO ledger.accounts (code, type, currency)
               SELECT code, CASE WHEN n % 2 = 0 THEN 'asset' ELSE 'revenue' END, $2
                 FROM unnest($1::text[]) WITH ORDINALITY AS c(code, n)
               RETURNING id, code),
           balance AS (INSERT INTO ledger.balances (account_id) SELECT id FROM created)
           SELECT id, code FROM created""",
        codes,
        CURRENCY,
    )
    return codes, {row["code"]: row["id"] for row in rows}


async def database_counters(connection: asyncpg.Connection) -> dict[str, int]:
    row = await connection.fetchrow(
        """SELECT d.xact_commit, d.xact_rollback, d.deadlocks, w.wal_records, w.wal_fpi, w.wal_bytes::bigint,
                  c.num_timed + c.num_requested AS checkpoints
             FROM pg_stat_database d, pg_stat_wal w, pg_stat_checkpointer c
            WHERE d.datname = current_database()"""
    )
    return dict(row)


def counter_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before[key] for key in before}


async def measure(
    name: str,
    server: Server,
    pool: asyncpg.Pool,
    window: Window,
    tasks: Sequence[asyncio.Task[None]],
    warmup_s: float,
    duration_s: float,
) -> RunResult:
    await asyncio.sleep(warmup_s)
    async with pool.acquire() as connection:
        counters = await database_counters(connection)
    cpu = CpuMeter(server.postmaster_pid)
    started = time.perf_counter()
    window.measuring = True
    await asyncio.sleep(duration_s)
    window.measuring = False
    elapsed = time.perf_counter() - started
    cpu_summary = cpu.summary()
    async with pool.acquire() as connection:
        database = counter_delta(counters, await database_counters(connection))
    window.stopping = True
    await asyncio.gather(*tasks)
    latency = window.latency().summary_ms()
    return RunResult(name, window.completed / elapsed, elapsed, window, latency, cpu_summary, database)


async def run_baseline(server: Server, workload: Workload) -> RunResult:
    window = Window()
    numbers = itertools.count()
    pool = await create_pool(server.url, size_max=BASELINE_CONNECTION_COUNT + 1, size_min=BASELINE_CONNECTION_COUNT + 1)

    async def worker() -> None:
        async with pool.acquire() as connection:
            while not window.stopping:
                request = workload.request(next(numbers), "baseline")
                started = time.perf_counter_ns()
                await commit_one_transfer(connection, workload.account_ids, request)
                window.record(started, EntryOutcome.CREATED)

    try:
        tasks = [asyncio.create_task(worker()) for _ in range(BASELINE_CONNECTION_COUNT)]
        return await measure("baseline", server, pool, window, tasks, BASELINE_WARMUP_S, BASELINE_DURATION_S)
    finally:
        await pool.close()


async def commit_one_transfer(
    connection: asyncpg.Connection, account_ids: dict[str, int], request: EntryRequest
) -> None:
    debit, credit = request.legs
    debit_id, credit_id = account_ids[debit.account], account_ids[credit.account]
    async with connection.transaction():
        # Locking both rows first, in id order, is what keeps two opposite transfers from deadlocking.
        await connection.fetch(
            """SELECT account_id, posted FROM ledger.balances WHERE account_id = ANY($1::bigint[])
                ORDER BY account_id FOR UPDATE""",
            sorted((debit_id, credit_id)),
        )
        entry_id = await connection.fetchval(
            """INSERT INTO ledger.entries (reference, kind, effective_at, fingerprint)
               VALUES ($1, 'transfer', now(), $2) RETURNING id""",
            request.reference,
            request.fingerprint(),
        )
        await connection.execute(
            """INSERT INTO ledger.postings (entry_id, account_id, amount, currency)
               VALUES ($1, $2, $3, $4), ($1, $5, $6, $4)""",
            entry_id,
            debit_id,
            debit.amount_minor,
            debit.currency,
            credit_id,
            credit.amount_minor,
        )
        await connection.execute(
            """UPDATE ledger.balances
                  SET posted = posted + CASE WHEN account_id = $1 THEN $2::bigint ELSE $4::bigint END,
                      version = version + 1
                WHERE account_id IN ($1, $3)""",
            debit_id,
            debit.amount_minor,
            credit_id,
            credit.amount_minor,
        )


async def run_batched(server: Server, workload: Workload, directory: AccountDirectory) -> RunResult:
    window = Window()
    numbers = itertools.count()
    batch_sizes: list[int] = []
    commit_ms: list[float] = []

    def observe(_name: str, size: int, seconds: float) -> None:
        if window.measuring:
            batch_sizes.append(size)
            commit_ms.append(seconds * 1000)

    async def commit(connection: asyncpg.Connection, requests: Sequence[EntryRequest]) -> list[EntryResult]:
        return await post_entries(connection, directory, requests)

    pool = await create_pool(server.url, size_max=BATCHER_LIMITS.committers + 1, size_min=BATCHER_LIMITS.committers + 1)
    committer: GroupCommitter[EntryRequest, EntryResult] = GroupCommitter(
        pool, commit, BATCHER_LIMITS, name="ledger-benchmark", observer=observe
    )

    async def client() -> None:
        while not window.stopping:
            request = workload.request(next(numbers), "batched")
            started = time.perf_counter_ns()
            result = await committer.submit(request)
            window.record(started, result.outcome)

    committer.start()
    try:
        tasks = [asyncio.create_task(client()) for _ in range(CLIENT_COUNT)]
        result = await measure("group commit", server, pool, window, tasks, BATCHED_WARMUP_S, BATCHED_DURATION_S)
    finally:
        await committer.stop()
        await pool.close()
    result.extra = {"batch_size": distribution(batch_sizes, 1), "batch_commit_ms": distribution(commit_ms)}
    return result


async def postgres_details(connection: asyncpg.Connection) -> dict[str, Any]:
    settings = {name: await connection.fetchval(f"SHOW {name}") for name in _POSTGRES_SETTINGS}
    return {"version": await connection.fetchval("SHOW server_version"), "settings": settings}


def run_summary(result: RunResult) -> dict[str, Any]:
    return {
        "transfers_per_s": round(result.transfers_per_s),
        "transfers": result.window.completed,
        "duration_s": round(result.elapsed_s, 3),
        "latency_ms": result.latency_ms,
        "cpu": result.cpu,
        "cpu_us_per_transfer": cpu_per_transfer(result),
        "database": result.database,
        "unexpected_outcomes": dict(result.window.unexpected),
        **result.extra,
    }


def cpu_per_transfer(result: RunResult) -> dict[str, float]:
    """CPU microseconds per committed transfer in this process and in PostgreSQL: unlike throughput, these hardly
    depend on what else the machine runs at the time."""
    if not result.transfers_per_s:
        return {}
    benchmark_us = 1e6 * result.cpu["benchmark_process_cores"] / result.transfers_per_s
    postgres_us = 1e6 * result.cpu["postgres_cores"] / result.transfers_per_s
    return {"benchmark_process": round(benchmark_us, 1), "postgres": round(postgres_us, 1)}


def idle_machine_projection(result: RunResult) -> float | None:
    """Transfers/s if every core did nothing but this run: cores / CPU per transfer. An upper bound (it assumes the
    two sides always overlap), reported next to the measurement when other processes took part of the machine."""
    per_transfer = cpu_per_transfer(result)
    total_us = sum(per_transfer.values())
    return round(result.cpu["cores"] * 1e6 / total_us) if total_us else None


async def benchmark(folder: Path) -> int:
    phases: dict[str, float] = {}
    began = time.perf_counter()
    with embedded_server(folder / "postgres", delete_on_exit=True) as url:
        phases["server_start_s"] = time.perf_counter() - began
        server = Server(url, postmaster_pid(folder / "postgres"))
        mark = time.perf_counter()
        connection = await asyncpg.connect(url)
        try:
            await database.migrate(connection)
            postgres = await postgres_details(connection)
            codes, account_ids = await create_accounts(connection)
            directory = AccountDirectory()
            await directory.load(connection, set(codes))  # a running engine's directory is warm
        finally:
            await connection.close()
        workload = draw_workload(codes, account_ids)
        # The drawn workload is a quarter of a million long-lived tuples that a running engine would not have;
        # frozen, the collector stops re-scanning them on every full collection.
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_GENERATION0_THRESHOLD, *gc.get_threshold()[1:])
        phases["setup_s"] = time.perf_counter() - mark

        mark = time.perf_counter()
        baseline = await run_baseline(server, workload)
        phases["baseline_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
        batched = await run_batched(server, workload, directory)
        phases["batched_s"] = time.perf_counter() - mark

        mark = time.perf_counter()
        connection = await asyncpg.connect(url)
        try:
            check = await check_ledger(connection)
        finally:
            await connection.close()
        phases["check_s"] = time.perf_counter() - mark
    phases["total_s"] = time.perf_counter() - began

    ratio = batched.transfers_per_s / baseline.transfers_per_s if baseline.transfers_per_s else float("inf")
    latency = batched.latency_ms
    unexpected = sum(batched.window.unexpected.values()) + sum(baseline.window.unexpected.values())
    results: dict[str, Any] = {
        "benchmark": "ledger",
        "transfers_per_s": round(batched.transfers_per_s),
        "baseline_transfers_per_s": round(baseline.transfers_per_s),
        "ratio": round(ratio, 2),
        "latency_ms_p50": latency.get("p50"),
        "latency_ms_p99": latency.get("p99"),
        "latency_ms_max": latency.get("max"),
        "cpu_us_per_transfer": cpu_per_transfer(batched),
        "projected_transfers_per_s_on_idle_machine": idle_machine_projection(batched),
        "target": {
            "transfers_per_s": TARGET_TRANSFERS_PER_S,
            "ratio": TARGET_RATIO,
            "met": batched.transfers_per_s >= TARGET_TRANSFERS_PER_S and ratio >= TARGET_RATIO,
        },
        "check": {"ok": check.ok, "entries": check.entries, "accounts": check.accounts, "problems": check.problems},
        "workload": {
            "seed": SEED,
            "accounts": ACCOUNT_COUNT,
            "zipf_exponent": ZIPF_EXPONENT,
            "hot_account_share_of_transfers": round(workload.hot_account_share, 4),
            "legs_per_transfer": 2,
            "amount_minor_range": [AMOUNT_MINOR_MIN, AMOUNT_MINOR_MAX],
            "batched_clients": CLIENT_COUNT,
            "batcher_limits": {
                "batch_size_max": BATCHER_LIMITS.batch_size_max,
                "batch_size_min": BATCHER_LIMITS.batch_size_min,
                "batch_delay_ms": BATCHER_LIMITS.batch_delay_ms,
                "committers": BATCHER_LIMITS.committers,
            },
            "baseline_connections": BASELINE_CONNECTION_COUNT,
            "gc": {"frozen_after_setup": True, "thresholds": list(gc.get_threshold())},
            "warmup_s": {"batched": BATCHED_WARMUP_S, "baseline": BASELINE_WARMUP_S},
        },
        "batched": run_summary(batched),
        "baseline": run_summary(baseline),
        "durations_s": {name: round(seconds, 3) for name, seconds in phases.items()},
        "machine": machine_details(),
        "postgres": postgres,
        "note": "the benchmark process (clients, batcher, asyncpg) and PostgreSQL share the machine's cores",
    }
    path = write_results("ledger", results)
    report(results, batched, baseline, path)
    return 0 if check.ok and unexpected == 0 else 1


def report(results: dict[str, Any], batched: RunResult, baseline: RunResult, path: Path) -> None:
    machine = results["machine"]
    rows: list[tuple[str, object]] = [
        (
            "machine",
            f"{machine['cpu_count']} cores ({machine['cpu_model']}), PostgreSQL {results['postgres']['version']}",
        ),
        (
            "durability",
            "synchronous_commit={synchronous_commit}, fsync={fsync}".format(**results["postgres"]["settings"]),
        ),
        (
            "workload",
            f"{ACCOUNT_COUNT} accounts, Zipf s={ZIPF_EXPONENT}, "
            f"hottest account in {results['workload']['hot_account_share_of_transfers']:.0%} of transfers, seed {SEED}",
        ),
    ]
    for result, clients in (
        (baseline, f"{BASELINE_CONNECTION_COUNT} connections"),
        (batched, f"{CLIENT_COUNT} clients"),
    ):
        latency = result.latency_ms
        rows.append(
            (
                result.name,
                f"{result.transfers_per_s:>9,.0f} transfers/s  ({clients}, {result.window.completed:,} in "
                f"{result.elapsed_s:.1f} s)  latency ms p50 {latency.get('p50')}  p99 {latency.get('p99')}  "
                f"max {latency.get('max')}",
            )
        )
        rows.append(
            (
                "",
                f"CPU cores: benchmark process {result.cpu['benchmark_process_cores']}, PostgreSQL "
                f"{result.cpu['postgres_cores']}, other processes {result.cpu['other_processes_cores']}; machine "
                f"{result.cpu['machine_busy_percent']}% busy; "
                f"{result.database['xact_commit'] / result.elapsed_s:,.0f} commits/s",
            )
        )
        per_transfer = cpu_per_transfer(result)
        rows.append(
            (
                "",
                f"CPU per transfer: benchmark process {per_transfer.get('benchmark_process')} us, "
                f"PostgreSQL {per_transfer.get('postgres')} us",
            )
        )
    batch = results["batched"]["batch_size"]
    rows += [
        (
            "batches",
            f"size mean {batch.get('mean')}  p50 {batch.get('p50')}  p99 {batch.get('p99')}  "
            f"max {batch.get('max')}  ({batch.get('count')} batches)",
        ),
        ("ratio", f"{results['ratio']:.1f}x the baseline"),
        (
            "idle machine",
            f"{results['projected_transfers_per_s_on_idle_machine']:,} transfers/s projected "
            "(cores / CPU per transfer; an upper bound, not a measurement)",
        ),
        (
            "target",
            f"{TARGET_TRANSFERS_PER_S:,}/s and {TARGET_RATIO:.0f}x: {'met' if results['target']['met'] else 'NOT met'}",
        ),
        (
            "ledger check",
            f"{'passed' if results['check']['ok'] else 'FAILED'} "
            f"({results['check']['entries']:,} entries, {results['check']['accounts']:,} accounts)",
        ),
        ("total time", f"{results['durations_s']['total_s']:.1f} s"),
        ("results", str(path)),
    ]
    print_table("Ledger benchmark (benchmark process and PostgreSQL share the same cores)", rows)
    noisy = max(baseline.cpu["other_processes_cores"], batched.cpu["other_processes_cores"])
    if noisy > NOISE_CORES_MAX:
        print(f"  warning: other processes used up to {noisy} cores during the runs: the numbers are understated")
    for problem in results["check"]["problems"][:20]:
        print(f"  check: {problem}")


if __name__ == "__main__":
    sys.exit(run_in_temporary_folder(benchmark))
