"""Group commit: concurrent callers hand over items and await their own result; one transaction commits many.

A PostgreSQL commit costs one WAL flush while a Python request costs tens of microseconds, so committing each
request alone caps throughput at the flush rate and queues every request on hot balance rows. The batcher commits
whatever is queued now (up to ``batch_size_max``) and batches what arrives meanwhile — natural group commit. An
optional ``batch_delay_ms`` waits for more items only while the batch is below ``batch_size_min``.

Failure handling, per batch:
- a concurrent-writer conflict (unique violation, deadlock, serialization failure) retries the whole batch, which
  then sees the other writer's rows;
- any other database error re-commits the items one by one, so one bad item fails alone;
- a lost connection fails every item of the batch with the error: the commit may or may not have happened, and
  callers retry with the same idempotent references.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import asyncpg

from toolkit.clock import SYSTEM_CLOCK, Clock

Item = TypeVar("Item")
Result = TypeVar("Result")
CommitFunction = Callable[[asyncpg.Connection, Sequence[Item]], Awaitable[Sequence[Result]]]
BatchObserver = Callable[[str, int, float], None]  # (batcher name, batch size, seconds)

_logger = logging.getLogger(__name__)
_RETRYABLE = (
    asyncpg.UniqueViolationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)


class BatcherFullError(Exception):
    """The batcher's queue is full: the caller should shed load (429/503) rather than wait."""


class BatcherClosedError(Exception):
    """The batcher is stopping and takes no new items."""


@dataclass(frozen=True)
class BatcherLimits:
    batch_size_max: int = 1000
    batch_size_min: int = 1
    batch_delay_ms: float = 0.0
    queue_size_max: int = 20_000
    committers: int = 2  # concurrent transactions: one prepares while another waits for its WAL flush
    conflict_retries_max: int = 5

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size_min <= self.batch_size_max:
            raise ValueError("need 1 <= batch_size_min <= batch_size_max")
        if self.batch_delay_ms < 0 or self.queue_size_max < 1 or self.committers < 1:
            raise ValueError("batch_delay_ms must be >= 0, queue_size_max and committers >= 1")


class GroupCommitter(Generic[Item, Result]):
    def __init__(
        self,
        pool: asyncpg.Pool,
        commit: CommitFunction[Item, Result],
        limits: BatcherLimits = BatcherLimits(),
        *,
        name: str = "batcher",
        observer: BatchObserver | None = None,
        clock: Clock = SYSTEM_CLOCK,
        transaction_setup: str | None = None,
    ) -> None:
        """``transaction_setup``: statements (e.g. ``SET LOCAL`` planner settings) sent with ``BEGIN`` in one round
        trip at the start of every batch's transaction."""
        self._pool = pool
        self._begin = "BEGIN" if transaction_setup is None else f"BEGIN; {transaction_setup}"
        self._commit_function = commit
        self.limits = limits
        self.name = name
        self._observer = observer
        self._clock = clock  # times the batching delay; tests drive it instead of waiting
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[Result]]] = asyncio.Queue(limits.queue_size_max)
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._waiting_for_room = 0

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def waiting_for_room(self) -> int:
        """Submitters held back by a full queue (back-pressure at work)."""
        return self._waiting_for_room

    @property
    def closed(self) -> bool:
        """True once :meth:`stop` has begun: new items are refused while the queued ones are committed."""
        return self._closed

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name=f"{self.name}-committer-{n}") for n in range(self.limits.committers)
        ]

    async def stop(self) -> None:
        """Stop taking items, commit what is queued, then end the committer tasks."""
        self._closed = True
        await self._queue.join()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def submit(self, item: Item) -> Result:
        """Queue ``item`` (waiting for room: back-pressure) and return its committed result."""
        return await self._enqueue(item, wait_for_room=True)

    async def submit_nowait(self, item: Item) -> Result:
        """Like :meth:`submit`, but raise :class:`BatcherFullError` at once when the queue is full."""
        return await self._enqueue(item, wait_for_room=False)

    async def _enqueue(self, item: Item, *, wait_for_room: bool) -> Result:
        if self._closed:
            raise BatcherClosedError(self.name)
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        try:
            # Queue.put is a coroutine even when there is room: ~1 us a call, paid by every item.
            self._queue.put_nowait((item, future))
        except asyncio.QueueFull:
            if not wait_for_room:
                raise BatcherFullError(self.name) from None
            self._waiting_for_room += 1
            try:
                await self._queue.put((item, future))
            finally:
                self._waiting_for_room -= 1
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            try:
                await self._fill(batch)
                await self._commit(batch)
            except Exception as error:  # a bug in the commit path must not kill the committer
                _logger.exception("%s: batch failed", self.name)
                _fail(batch, error)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _fill(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        limits = self.limits
        while len(batch) < limits.batch_size_max and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        if limits.batch_delay_ms <= 0 or len(batch) >= limits.batch_size_min:
            return
        deadline = self._clock.monotonic() + limits.batch_delay_ms / 1000
        while len(batch) < limits.batch_size_min:
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                return
            try:
                batch.append(await self._clock.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                return

    async def _commit(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        started = time.perf_counter()
        items = [item for item, _ in batch]
        for attempt in range(self.limits.conflict_retries_max + 1):
            try:
                results = await self._transaction(items)
            except _RETRYABLE as error:
                if attempt < self.limits.conflict_retries_max:
                    continue
                if len(batch) == 1:
                    raise
                # Each retry lost a race to a different writer; one by one, each item has few writers to race.
                _logger.warning(
                    "%s: batch of %d still conflicting (%s); committing one by one", self.name, len(batch), error
                )
                for single in batch:
                    await self._commit([single])
                return
            except asyncpg.PostgresError as error:
                if len(batch) == 1:
                    _fail(batch, error)
                    return
                _logger.warning("%s: batch of %d failed (%s); committing one by one", self.name, len(batch), error)
                for single in batch:
                    await self._commit([single])
                return
            break
        if len(results) != len(batch):
            raise RuntimeError(f"{self.name}: commit returned {len(results)} results for {len(batch)} items")
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
        if self._observer is not None:
            self._observer(self.name, len(batch), time.perf_counter() - started)

    async def _transaction(self, items: list[Item]) -> Sequence[Result]:
        # BEGIN and COMMIT by hand rather than connection.transaction(): the setup rides with BEGIN (simple query
        # protocol), saving a round trip per batch.
        async with self._pool.acquire() as connection:
            await connection.execute(self._begin)
            try:
                results = await self._commit_function(connection, items)
            except BaseException:
                if not connection.is_closed():
                    with contextlib.suppress(Exception):
                        await connection.execute("ROLLBACK")
                raise
            await connection.execute("COMMIT")
            return results


def _fail(batch: Sequence[tuple[object, asyncio.Future[Any]]], error: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)
