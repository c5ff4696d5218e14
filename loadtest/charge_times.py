"""Time to charge, from the donations themselves: acceptance (``created_at``) to settlement (``settled_at``).

A donation charged while its request waited takes a few hundred milliseconds; one accepted into the durable queue
at the peak waits its turn at the processor's pace, so this is where a queue's cost to donors shows.
"""

from __future__ import annotations

import collections
from typing import Any

import asyncpg

from toolkit.latency_histogram import LatencyHistogram


async def time_to_charge(connection: asyncpg.Connection, run_id: str, started_epoch_s: float) -> dict[str, Any]:
    """Overall and per-second (by acceptance) distributions, and settlements per second, for one run."""
    rows = await connection.fetch(
        """SELECT extract(epoch FROM created_at)::float8 AS created_s,
                  extract(epoch FROM settled_at)::float8 AS settled_s
             FROM surge.donations
            WHERE metadata->>'run' = $1 AND settled_at IS NOT NULL""",
        run_id,
    )
    overall = LatencyHistogram(3)
    by_second: dict[int, LatencyHistogram] = collections.defaultdict(lambda: LatencyHistogram(2))
    settled: collections.Counter[int] = collections.Counter()
    for row in rows:
        microseconds = int((row["settled_s"] - row["created_s"]) * 1e6)
        overall.record_us(microseconds)
        by_second[max(0, int(row["created_s"] - started_epoch_s))].record_us(microseconds)
        settled[max(0, int(row["settled_s"] - started_epoch_s))] += 1
    timeline = []
    for second in range(max(by_second, default=-1) + 1):
        summary = by_second[second].summary_ms() if second in by_second else {"count": 0}
        timeline.append({"t": second, **{k: summary.get(k) for k in ("count", "p50", "p99", "max")}})
    return {
        "overall_ms": overall.summary_ms(),
        "timeline": timeline,
        "settled_per_second": [{"t": s, "count": settled.get(s, 0)} for s in range(max(settled, default=-1) + 1)],
    }
