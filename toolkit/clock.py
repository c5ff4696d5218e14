"""Time as a dependency: code that waits or measures takes a ``Clock``, so tests drive time instead of sleeping.

``SYSTEM_CLOCK`` is the real thing (``time.monotonic`` and asyncio's own sleep and timeout). ``ManualClock`` stands
still until a test calls ``advance``; its sleepers wake when the time they wait for is reached, and a test can wait
until some code is asleep (``until_sleeping``) instead of guessing how long that takes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds from an arbitrary start; never goes back."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` have passed on this clock."""
        ...

    async def wait_for(self, awaitable: Awaitable[T], seconds: float) -> T:
        """The awaitable's result, or :class:`TimeoutError` (cancelling it) once ``seconds`` have passed."""
        ...


class SystemClock:
    """The machine's monotonic clock and the event loop's timers."""

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait_for(self, awaitable: Awaitable[T], seconds: float) -> T:
        return await asyncio.wait_for(awaitable, seconds)


SYSTEM_CLOCK: Clock = SystemClock()


class ManualClock:
    """A clock for tests: time moves only by :meth:`advance`."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = start_s
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self._sleeping_waiters: list[tuple[int, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self._now_s

    @property
    def sleepers(self) -> int:
        """How many sleeps (including the timeouts of ``wait_for``) are waiting for time to pass."""
        return len(self._sleepers)

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose time has come."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back ({seconds} s)")
        self._now_s += seconds
        for deadline_s, future in self._sleepers:
            if deadline_s <= self._now_s and not future.done():
                future.set_result(None)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)  # a zero sleep still yields to other tasks, as asyncio's does
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        sleeper = (self._now_s + seconds, future)
        self._sleepers.append(sleeper)
        self._notify_sleeping_waiters()
        try:
            await future
        finally:
            self._sleepers.remove(sleeper)

    async def wait_for(self, awaitable: Awaitable[T], seconds: float) -> T:
        task = asyncio.ensure_future(awaitable)
        timer = asyncio.ensure_future(self.sleep(seconds))
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            timer.cancel()
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.wait({task})
        if task.cancelled():
            raise TimeoutError
        return task.result()  # it finished while being cancelled: its result stands, as with asyncio.wait_for

    async def until_sleeping(self, count: int = 1) -> None:
        """Return once at least ``count`` sleeps are waiting on this clock."""
        if len(self._sleepers) >= count:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (count, future)
        self._sleeping_waiters.append(waiter)
        try:
            await future
        finally:
            self._sleeping_waiters.remove(waiter)

    def _notify_sleeping_waiters(self) -> None:
        for count, future in self._sleeping_waiters:
            if len(self._sleepers) >= count and not future.done():
                future.set_result(None)
