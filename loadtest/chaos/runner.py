"""Executing a fault schedule against a running rehearsal, and the fault log the report and the tests read.

Each fault starts at its planned second after the load started (its own task, so a database down for two seconds
does not hold back a worker kill) and records what really happened: when it began and ended, and what it observed
(the killed and the new pid, the postmaster before and after, the refunds acknowledged).
"""

from __future__ import annotations

import asyncio
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from loadtest.chaos.money import MoneyActions
from loadtest.chaos.postgres import PostgresControl
from loadtest.chaos.schedule import Fault, FaultKind
from loadtest.chaos.workers import EngineWorkers


@dataclass
class FaultRecord:
    fault: Fault
    started_s: float | None = None
    ended_s: float | None = None
    outcome: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            **self.fault.as_json(),
            "started_s": None if self.started_s is None else round(self.started_s, 3),
            "ended_s": None if self.ended_s is None else round(self.ended_s, 3),
            "outcome": self.outcome,
            "error": self.error,
        }


class ChaosRunner:
    def __init__(
        self,
        faults: list[Fault],
        start_ns: int,
        workers: EngineWorkers | None,
        postgres: PostgresControl | None,
        money: MoneyActions | None,
    ) -> None:
        self.records = [FaultRecord(fault) for fault in faults]
        self._start_ns = start_ns
        self._workers = workers
        self._postgres = postgres
        self._money = money

    def _now_s(self) -> float:
        return (time.perf_counter_ns() - self._start_ns) / 1e9

    async def run(self) -> None:
        await asyncio.gather(*(self._at(record) for record in self.records))

    async def _at(self, record: FaultRecord) -> None:
        wait_s = record.fault.at_s - self._now_s()
        if wait_s > 0:
            await asyncio.sleep(wait_s)  # the schedule itself: this fault is due then
        record.started_s = self._now_s()
        try:
            record.outcome = await self._execute(record.fault)
        except Exception as error:  # a fault that could not be made is reported, and the rehearsal goes on
            record.error = f"{type(error).__name__}: {error}"
            record.outcome["traceback"] = traceback.format_exc(limit=3)
        record.ended_s = self._now_s()

    async def _execute(self, fault: Fault) -> dict[str, Any]:
        kind = fault.kind
        if kind is FaultKind.WORKER_KILL:
            return await self._kill_worker(int(fault.detail["worker"]))
        if kind is FaultKind.POSTGRES_STOP:
            return await self._stop_postgres(fault.duration_s)
        if kind in (FaultKind.PROCESSOR_OUTAGE, FaultKind.PROCESSOR_SLOW):
            await asyncio.sleep(fault.duration_s)  # the window is in the control file; it lasts this long
            return {"window_s": fault.duration_s, **fault.detail}
        if kind is FaultKind.TIMEOUTS:
            await asyncio.sleep(fault.duration_s)  # the hanging cards were planned into the traffic
            return {"window_s": fault.duration_s}
        if self._money is None:
            return {"skipped": "no finance key or database for money faults"}
        if kind is FaultKind.REFUNDS:
            before = len(self._money.log.refunds_acknowledged)
            donations = await self._money.refund_batch(int(fault.detail["batch"]))
            return {"donations": donations, "refunds_acknowledged": len(self._money.log.refunds_acknowledged) - before}
        if kind is FaultKind.DISPUTE_OPEN:
            return {"dispute": await self._money.open_dispute(int(fault.detail["dispute"]))}
        if kind is FaultKind.DISPUTE_CLOSE:
            won = fault.detail["outcome"] == "won"
            return {"closed": await self._money.close_dispute(int(fault.detail["dispute"]), won)}
        raise ValueError(f"no executor for {kind}")

    async def _kill_worker(self, index: int) -> dict[str, Any]:
        if self._workers is None:
            return {"skipped": "the engine was not started by this rehearsal"}
        old_pid = self._workers.pid_of(index)
        status = await self._workers.kill(index)
        killed_s = self._now_s()
        new_pid = await self._workers.restart(index)
        return {
            "worker": index,
            "old_pid": old_pid,
            "exit_status": status,
            "new_pid": new_pid,
            "restart_s": round(self._now_s() - killed_s, 3),
        }

    async def _stop_postgres(self, down_s: float) -> dict[str, Any]:
        if self._postgres is None:
            return {"skipped": "the database is not this rehearsal's to stop"}
        before = self._postgres.server_pid()
        await self._postgres.stop_immediately()
        stopped = self._postgres.server_pid()
        await asyncio.sleep(down_s)  # the outage's planned length
        await self._postgres.start()
        return {
            "postmaster_before": before,
            "running_while_down": stopped,
            "postmaster_after": self._postgres.server_pid(),
        }

    def as_json(self) -> list[dict[str, Any]]:
        return [record.as_json() for record in self.records]
