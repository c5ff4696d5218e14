"""What one lease of the shared processor budget costs: a round trip to PostgreSQL (the default store) and to Redis.

    uv run python -m benchmarks.lease_cost

No arguments, about 5 s. A fresh embedded PostgreSQL (temporary folder, deleted at the end) and, when installed, a
throwaway redis-server on a Unix socket; each store's bucket (``engine.pipeline.budget``) is asked for 2 tokens
``LEASES`` times in a row, as the lease loop does, at a rate and burst that never run dry, so that every call is
granted in full and the time is the round trip alone. Each call is timed; mean, p50, p99 and max per store go to
``benchmarks/results/lease_cost.json``. At 50 leases a second per processor per process (``LEASE_INTERVAL_S``), a
lease of ``x`` µs takes ``x / 200`` % of one connection.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks.common import distribution, machine_details, print_table, run_in_temporary_folder, write_results
from engine import database
from engine.database import embedded_server
from engine.pipeline.budget import LEASE_INTERVAL_S, PostgresTokens, RedisTokens
from toolkit.redis_server import redis_server, redis_server_installed
from toolkit.token_bucket import SharedTokens

LEASES = 2_000
WARM_UP = 100  # the first calls seed the bucket and warm the connection and the script cache
RATE_PER_S = 1e6  # never runs dry: every lease is granted in full
BURST = 10_000


async def lease_times_us(shared: SharedTokens) -> dict[str, Any]:
    for _ in range(WARM_UP):
        await shared.take(2)
    times_us = []
    granted = 0
    for _ in range(LEASES):
        started = time.perf_counter()
        granted += await shared.take(2)
        times_us.append((time.perf_counter() - started) * 1e6)
    if granted != 2 * LEASES:
        raise RuntimeError(f"a lease was not granted in full ({granted} of {2 * LEASES} tokens): not a round trip")
    return {"lease_us": distribution(times_us, digits=1)}


async def benchmark(folder: Path) -> int:
    results: dict[str, Any] = {"leases": LEASES, "lease_interval_s": LEASE_INTERVAL_S, "machine": machine_details()}
    with embedded_server(folder / "postgres", delete_on_exit=True) as url:
        connection = await asyncpg.connect(url)
        try:
            await database.migrate(connection)
        finally:
            await connection.close()
        pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
        try:
            results["postgres"] = await lease_times_us(PostgresTokens(pool, "benchmark", RATE_PER_S, BURST))
        finally:
            await pool.close()
    if redis_server_installed():
        import redis.asyncio

        async with redis_server(folder) as socket_path:
            client = redis.asyncio.Redis(unix_socket_path=str(socket_path))
            try:
                results["redis"] = await lease_times_us(RedisTokens(client, "benchmark", RATE_PER_S, BURST))
            finally:
                await client.aclose()
    else:
        results["redis"] = None
        print("redis-server is not installed (apt-get install redis-server): Redis not measured", file=sys.stderr)
    rows = []
    for store in ("postgres", "redis"):
        if results[store] is None:
            continue
        lease = results[store]["lease_us"]
        share = lease["mean"] / (LEASE_INTERVAL_S * 1e6) * 100
        rows.append(
            (
                store,
                f"mean {lease['mean']} µs  p50 {lease['p50']}  p99 {lease['p99']}  max {lease['max']}"
                f"  ({share:.1f} % of one connection at {1 / LEASE_INTERVAL_S:g} leases/s)",
            )
        )
    print_table(f"one lease round trip ({LEASES} each)", rows)
    path = write_results("lease_cost", results)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_in_temporary_folder(benchmark))
