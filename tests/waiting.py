"""Waiting for a condition instead of sleeping for a guessed time.

``wait_until`` polls a predicate (plain or async) until it returns something truthy, and returns that value; past
the deadline it fails with ``WaitTimeout`` saying what it waited for and what the predicate last returned. The poll
interval only bounds how late the wait notices; the deadline bounds how long a broken test hangs.
``wait_for_line`` reads a child process's output until a line matches, failing if the process exits first.
"""

# The deadline is each helper's parameter, not an enclosing asyncio.timeout: the failure then says what was awaited
# and what the condition last answered, which a bare TimeoutError would not.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

TIMEOUT_S = 30.0
INTERVAL_S = 0.02


class WaitTimeout(AssertionError):
    """A condition that did not come true in time (an AssertionError, so pytest reports it as a test failure)."""


def _failure(what: str, timeout: float, last: object) -> WaitTimeout:
    return WaitTimeout(f"timed out after {timeout:g} s waiting for {what} (last result: {last!r})")


@overload
async def wait_until(
    predicate: Callable[[], Awaitable[T]], *, timeout: float = ..., what: str, interval: float = ...
) -> T: ...


@overload
async def wait_until(predicate: Callable[[], T], *, timeout: float = ..., what: str, interval: float = ...) -> T: ...


async def wait_until(
    predicate: Callable[[], Any],
    *,
    timeout: float = TIMEOUT_S,
    what: str,
    interval: float = INTERVAL_S,
) -> Any:
    """Await ``predicate()`` (sync or async) until it is truthy and return its value; ``WaitTimeout`` after
    ``timeout`` seconds. Exceptions from the predicate propagate: a condition that cannot be asked is a failure."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        value = await result if inspect.isawaitable(result) else result
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _failure(what, timeout, value)
        await asyncio.sleep(interval)


def wait_until_sync(
    predicate: Callable[[], T], *, timeout: float = TIMEOUT_S, what: str, interval: float = INTERVAL_S
) -> T:
    """``wait_until`` for code outside an event loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _failure(what, timeout, value)
        time.sleep(interval)


async def wait_for_event(event: asyncio.Event, *, timeout: float = TIMEOUT_S, what: str) -> None:
    """Wait for an ``asyncio.Event`` with a deadline and a message."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        raise _failure(what, timeout, False) from None


async def wait_for_line(
    stream: asyncio.StreamReader,
    pattern: str,
    *,
    timeout: float = TIMEOUT_S,
    what: str,
    seen: list[str] | None = None,
) -> re.Match[str]:
    """Read ``stream`` (a child's stdout or stderr) line by line until one matches ``pattern``; the lines read are
    appended to ``seen`` when given. Fails on end of stream (the process exited) or at the deadline."""
    lines = seen if seen is not None else []
    regex = re.compile(pattern)
    try:
        async with asyncio.timeout(timeout):
            while raw := await stream.readline():
                line = raw.decode(errors="replace").rstrip("\n")
                lines.append(line)
                if match := regex.search(line):
                    return match
    except TimeoutError:
        raise _failure(what, timeout, "\n".join(lines[-20:])) from None
    raise WaitTimeout(f"the stream ended before {what}; its last lines:\n" + "\n".join(lines[-20:]))
