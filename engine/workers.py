"""The one loop every background worker of an engine process runs: a round of work, then — unless the round says
more is due now — a wait until woken or until the poll interval passes. A round that fails on the database or the
network is logged and tried again next round (``WORKER_RETRYABLE_ERRORS``); anything else is logged with its
traceback and tried again too: a worker never dies of one bad round.

Used by the durable queue's runner (engine/pipeline/queue.py), the refund worker
(engine/payments/refund_recovery.py) and the receipt relay (engine/receipts/relay.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from engine.database import WORKER_RETRYABLE_ERRORS

_logger = logging.getLogger(__name__)


class PollingLoop:
    def __init__(
        self,
        name: str,
        round_of_work: Callable[[], Awaitable[int]],
        poll_interval_s: float,
        more_due: Callable[[int], bool],
    ) -> None:
        """``round_of_work`` returns how many items it claimed; ``more_due(claimed)`` says whether to go again at
        once instead of waiting."""
        self.name = name
        self._round = round_of_work
        self._poll_interval_s = poll_interval_s
        self._more_due = more_due
        self._wake = asyncio.Event()
        self._stopping = False
        self._runner: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Stop after the current round."""
        self._stopping = True
        self._wake.set()
        if self._runner is not None:
            await self._runner

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                claimed = await self._round()
            except WORKER_RETRYABLE_ERRORS as error:
                _logger.warning("%s: %s; retrying", self.name, error)
                claimed = 0
            except Exception:
                _logger.exception("%s failed; retrying", self.name)
                claimed = 0
            if not self._more_due(claimed):
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)


async def finish_tasks(tasks: set[asyncio.Task[None]], timeout_s: float) -> None:
    """Let a worker's tasks under way finish for up to ``timeout_s``, then cancel what is left."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
