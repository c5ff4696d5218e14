"""One chaos rehearsal's moving parts around the load: the schedule, the engine workers, the database control,
the processor's live control file, the webhook deliverer and the money actions; and, afterwards, what they saw.

run.py drives the load as for any profile and calls in here at four points: ``engine`` (instead of one engine
process), ``plan`` (timeout windows), ``start`` (when the load starts) and ``finish`` (after the queue drained).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import asyncpg

from adapters.simulated import SimulatedConfig, SimulatedProcessor
from engine.database import create_pool
from engine.keys import Role
from loadtest.chaos.money import MoneyActions, MoneyLog
from loadtest.chaos.postgres import PostgresControl
from loadtest.chaos.processor import control_environment, write_control
from loadtest.chaos.runner import ChaosRunner
from loadtest.chaos.schedule import ChaosOptions, Fault, build_schedule, schedule_json
from loadtest.chaos.timeouts import with_timeouts
from loadtest.chaos.webhooks import DeliveryLog, WebhookDeliverer
from loadtest.chaos.workers import EngineWorkers
from loadtest.engine_process import new_key
from loadtest.traffic import PlannedRequest

PROCESSOR_NAME = "simulated"
WEBHOOK_FINISH_TIMEOUT_S = 60.0


class ChaosSession:
    def __init__(
        self,
        seed: int,
        duration_s: float,
        database_url: str,
        data_folder: Path | None,
        report_folder: Path,
        options: ChaosOptions | None = None,
    ) -> None:
        # PostgreSQL is stopped only when it is ours: the embedded server this rehearsal started.
        options = options or ChaosOptions()
        self.options = dataclasses.replace(options, postgres=options.postgres and data_folder is not None)
        self.seed = seed
        self.faults: list[Fault] = build_schedule(seed, duration_s, self.options)
        self.database_url = database_url
        self.postgres = None if data_folder is None else PostgresControl(data_folder, database_url)
        self.control_path = (report_folder / "chaos-control.json").resolve()
        self.workers: EngineWorkers | None = None
        self.timeouts_planned = 0
        self.control: dict[str, Any] = {}
        self._pool: asyncpg.Pool | None = None
        self._processor: SimulatedProcessor | None = None
        self._runner: ChaosRunner | None = None
        self._deliverer: WebhookDeliverer | None = None
        self._money: MoneyActions | None = None
        self._stop_delivery = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stack = contextlib.AsyncExitStack()
        self._finished = False

    def engine(self, report_folder: Path, environment: Mapping[str, str]) -> EngineWorkers:
        self.control_path.parent.mkdir(parents=True, exist_ok=True)
        write_control(self.control_path, [], 0.0)  # no window yet: the workers start on a quiet processor
        self.workers = EngineWorkers(
            self.database_url,
            report_folder,
            {**environment, **control_environment(self.control_path)},
            count=self.options.workers,
        )
        return self.workers

    def plan(self, plan: list[PlannedRequest]) -> list[PlannedRequest]:
        plan, self.timeouts_planned = with_timeouts(plan, self.faults, self.seed)
        return plan

    async def start(
        self, url: str, start_ns: int, started_epoch_s: float, acknowledged: Callable[[], Mapping[str, int]]
    ) -> None:
        self.control = write_control(self.control_path, self.faults, started_epoch_s)
        engine_environment = self.workers.environment if self.workers is not None else {}
        # No connection floor: while the database is down on purpose, asyncpg would log every failed refill.
        self._pool = await create_pool(self.database_url, size_max=4, size_min=0)
        self._processor = SimulatedProcessor(
            self._pool, SimulatedConfig.from_environment(engine_environment), name=PROCESSOR_NAME
        )
        finance_key = await new_key(self.database_url, Role.FINANCE, "surge loadtest --chaos")
        self._money = await self._stack.enter_async_context(
            MoneyActions(url, finance_key, self._pool, self._processor, acknowledged, self.seed)
        )
        self._deliverer = WebhookDeliverer(self._processor, url, self.seed, self.options, PROCESSOR_NAME)
        self._runner = ChaosRunner(self.faults, start_ns, self.workers, self.postgres, self._money)
        self._tasks = [
            asyncio.create_task(self._runner.run()),
            asyncio.create_task(self._deliverer.run(self._stop_delivery)),
        ]

    async def faults_done(self) -> None:
        """Wait for every scheduled fault to have happened (and ended)."""
        if self._tasks:
            await self._tasks[0]

    async def finish(self) -> None:
        """Deliver the webhooks still due, then stop delivering; close what ``start`` opened. Once only."""
        if self._finished:
            return
        self._finished = True
        await self.faults_done()
        self._stop_delivery.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._deliverer is not None:
            await self._deliverer.finish(WEBHOOK_FINISH_TIMEOUT_S)
        await self._stack.aclose()
        if self._pool is not None:
            await self._pool.close()

    async def abort(self) -> None:
        """Stop at once (the rehearsal failed before ``finish``): cancel the faults and the deliveries, close."""
        if self._finished:
            return
        self._finished = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._deliverer is not None:
            await self._deliverer.close()
        await self._stack.aclose()
        if self._pool is not None:
            await self._pool.close()

    @property
    def engine_environment(self) -> dict[str, str]:
        return {} if self.workers is None else dict(self.workers.environment)

    @property
    def money_log(self) -> MoneyLog | None:
        return None if self._money is None else self._money.log

    @property
    def delivery_log(self) -> DeliveryLog | None:
        return None if self._deliverer is None else self._deliverer.log

    def results(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "options": dataclasses.asdict(self.options),
            "schedule": schedule_json(self.faults),
            "faults": [] if self._runner is None else self._runner.as_json(),
            "timeouts_planned": self.timeouts_planned,
            "processor_control": self.control,
            "workers": None if self.workers is None else self.workers.pid_history(),
            "postgres": None
            if self.postgres is None
            else {"stops": self.postgres.stops, "starts": self.postgres.starts},
            "webhooks": None if self._deliverer is None else self._deliverer.log.summary(),
            "money": None if self._money is None else self._money.log.summary(),
        }
