"""The waiting helpers: they return as soon as the condition holds, and fail at the deadline saying what they
waited for."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests.waiting import WaitTimeout, wait_for_event, wait_for_line, wait_until, wait_until_sync


async def test_returns_the_first_truthy_value_of_a_plain_predicate() -> None:
    answers: Iterator[object] = iter([0, None, [], "ready", "later"])
    assert await wait_until(lambda: next(answers), what="an answer", interval=0) == "ready"


async def test_awaits_an_async_predicate() -> None:
    calls: list[int] = []

    async def ready() -> int:
        calls.append(1)
        return len(calls) if len(calls) >= 3 else 0

    assert await wait_until(ready, what="three calls", interval=0) == 3


async def test_fails_at_the_deadline_naming_what_it_waited_for() -> None:
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"timed out after 0.05 s waiting for the queue to drain \(last result: 0\)"):
        await wait_until(lambda: 0, timeout=0.05, what="the queue to drain", interval=0.01)
    assert 0.05 <= time.monotonic() - started < 5


async def test_a_predicate_that_raises_fails_at_once() -> None:
    def broken() -> bool:
        raise KeyError("no such row")

    with pytest.raises(KeyError):
        await wait_until(broken, what="a row")


async def test_notices_a_condition_made_true_by_another_task() -> None:
    flag: list[bool] = []
    asyncio.get_running_loop().call_later(0.02, flag.append, True)
    assert await wait_until(lambda: flag, timeout=5, what="the flag") == [True]


def test_the_sync_variant_polls_and_fails_alike() -> None:
    answers = iter([False, False, True])
    assert wait_until_sync(lambda: next(answers), what="the third answer", interval=0) is True
    with pytest.raises(WaitTimeout, match="waiting for nothing"):
        wait_until_sync(lambda: False, timeout=0.03, what="nothing", interval=0.01)


async def test_wait_for_event_returns_when_set_and_fails_when_not() -> None:
    event = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, event.set)
    await wait_for_event(event, timeout=5, what="the event")
    with pytest.raises(WaitTimeout, match="waiting for another event"):
        await wait_for_event(asyncio.Event(), timeout=0.02, what="another event")


async def test_wait_for_line_reads_a_childs_output_until_the_line() -> None:
    process = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        "echo starting; echo 'listening on http://127.0.0.1:8123'; exec sleep 30",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        seen: list[str] = []
        match = await wait_for_line(process.stdout, r"listening on \S+:(\d+)", what="listening", seen=seen)
        assert match.group(1) == "8123" and seen == ["starting", "listening on http://127.0.0.1:8123"]
    finally:
        process.kill()
        await process.wait()


async def test_wait_for_line_fails_when_the_child_exits_or_stays_silent() -> None:
    process = await asyncio.create_subprocess_exec("sh", "-c", "echo boom", stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    with pytest.raises(WaitTimeout, match=r"ended before the engine listened; its last lines:\nboom"):
        await wait_for_line(process.stdout, "listening", what="the engine listened")
    await process.wait()

    silent = await asyncio.create_subprocess_exec("sleep", "30", stdout=asyncio.subprocess.PIPE)
    try:
        assert silent.stdout is not None
        with pytest.raises(WaitTimeout, match=r"timed out after 0\.05 s waiting for a word"):
            await wait_for_line(silent.stdout, "word", timeout=0.05, what="a word")
    finally:
        silent.kill()
        await silent.wait()
