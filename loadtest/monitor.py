"""Watching the engine while it works: the durable queue's depth and the requests in progress, from ``/metrics``.

``surge_queue_depth{queue="durable"}`` counts donations accepted but not yet settled (queued, charging, pending);
sampled once a second through the run and the drain after it, it shows the queue growing while intake outruns the
processor and draining after the peak.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field

from loadtest.http_client import ConnectionPool, HttpError

_QUEUE_DEPTH = re.compile(rb'^surge_queue_depth\{queue="durable"\} ([0-9.e+]+)$', re.MULTILINE)
_IN_FLIGHT = re.compile(rb"^surge_donations_in_flight ([0-9.e+]+)$", re.MULTILINE)


@dataclass
class QueueSample:
    t: float  # seconds since the run started
    depth: int | None
    in_flight: int | None


@dataclass
class EngineMonitor:
    host: str
    port: int
    start_ns: int
    interval_s: float = 1.0
    samples: list[QueueSample] = field(default_factory=list)
    _pool: ConnectionPool | None = None

    @property
    def latest_depth(self) -> int | None:
        for sample in reversed(self.samples):
            if sample.depth is not None:
                return sample.depth
        return None

    async def sample(self) -> QueueSample:
        if self._pool is None:
            self._pool = ConnectionPool(self.host, self.port, size_max=1)
        request = f"GET /metrics HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode()
        depth = in_flight = None
        with contextlib.suppress(HttpError, TimeoutError, ValueError):
            response = await self._pool.request(request, timeout_s=5.0)
            if response.status == 200:
                depth = _gauge(_QUEUE_DEPTH, response.body)
                in_flight = _gauge(_IN_FLIGHT, response.body)
        sample = QueueSample(round((time.perf_counter_ns() - self.start_ns) / 1e9, 2), depth, in_flight)
        self.samples.append(sample)
        return sample

    async def run(self, stop: asyncio.Event) -> None:
        """Sample every ``interval_s`` until ``stop`` is set."""
        while not stop.is_set():
            await self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()


def _gauge(pattern: re.Pattern[bytes], text: bytes) -> int | None:
    match = pattern.search(text)
    return int(float(match.group(1))) if match else None
