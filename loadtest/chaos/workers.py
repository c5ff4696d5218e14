"""Engine workers under the rehearsal's own supervision: N processes on one loopback port (SO_REUSEPORT), each
killable with SIGKILL and started again, readiness read from each worker's own log (its "listening on" line)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from loadtest.chaos.worker import READY_LINE
from loadtest.engine_process import REHEARSAL_ENVIRONMENT, EngineStartError, free_port, spawn_engine

READY_POLL_S = 0.05


@dataclass
class _Worker:
    index: int
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    pids: list[int] = field(default_factory=list)  # every pid this worker has had, oldest first


class EngineWorkers:
    """``count`` engine workers sharing ``host:port``; the same face as EngineProcess (url, start, stop)."""

    def __init__(self, database_url: str, log_folder: Path, environment: Mapping[str, str], count: int = 2) -> None:
        if count < 1:
            raise ValueError("need at least one engine worker")
        self.host = "127.0.0.1"
        self.port = free_port()
        # A charge lost on every try (pm_sim_timeout_lost) is never decided: flagged for review after its first
        # undecided lookup, so that the audit sees it surfaced within the rehearsal rather than after twenty.
        self.environment = {
            **REHEARSAL_ENVIRONMENT,
            "SURGE_REVIEW_AFTER_LOOKUPS": "1",
            **environment,
            "SURGE_WORKERS": str(max(count, 2)),
        }
        self._database_url = database_url
        self._workers = [_Worker(n, log_folder / f"engine-worker-{n}.log") for n in range(count)]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def count(self) -> int:
        return len(self._workers)

    @property
    def pid(self) -> int | None:
        return self.pid_of(0)

    def pid_of(self, index: int) -> int | None:
        process = self._workers[index].process
        return None if process is None else process.pid

    def pid_history(self) -> dict[str, list[int]]:
        return {str(worker.index): list(worker.pids) for worker in self._workers}

    async def start(self, timeout_s: float = 60.0) -> None:
        await asyncio.gather(*(self._spawn(worker, timeout_s) for worker in self._workers))

    async def kill(self, index: int) -> int:
        """SIGKILL worker ``index`` (no shutdown, no cleanup: a crash) and return its exit status."""
        process = self._workers[index].process
        if process is None or process.returncode is not None:
            raise RuntimeError(f"engine worker {index} is not running")
        process.send_signal(signal.SIGKILL)
        return await process.wait()

    async def restart(self, index: int, timeout_s: float = 60.0) -> int:
        """Start worker ``index`` again; returns its new pid once it is listening."""
        worker = self._workers[index]
        await self._spawn(worker, timeout_s)
        if worker.process is None:
            raise RuntimeError(f"engine worker {index} did not start")
        return worker.process.pid

    async def stop(self, timeout_s: float = 40.0) -> None:
        """SIGTERM every worker (graceful), then SIGKILL those still running after ``timeout_s``."""
        running = [w.process for w in self._workers if w.process is not None and w.process.returncode is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), timeout_s)
        except TimeoutError:
            for process in running:
                if process.returncode is None:
                    process.kill()
            await asyncio.gather(*(p.wait() for p in running))

    async def _spawn(self, worker: _Worker, timeout_s: float) -> None:
        offset = worker.log_path.stat().st_size if worker.log_path.exists() else 0
        worker.process = await spawn_engine(
            ("loadtest.chaos.worker",),
            worker.log_path,
            database_url=self._database_url,
            host=self.host,
            port=self.port,
            environment=self.environment,
        )
        worker.pids.append(worker.process.pid)
        await self._wait_ready(worker, offset, timeout_s)

    async def _wait_ready(self, worker: _Worker, offset: int, timeout_s: float) -> None:
        process = worker.process
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with worker.log_path.open("rb") as log:
                log.seek(offset)
                if READY_LINE.encode() in log.read():
                    return
            if process is not None and process.returncode is not None:
                raise EngineStartError(f"engine worker {worker.index} exited with {process.returncode}")
            await asyncio.sleep(READY_POLL_S)
        raise EngineStartError(
            f"engine worker {worker.index} did not listen in {timeout_s:.0f} s; see {worker.log_path}"
        )
