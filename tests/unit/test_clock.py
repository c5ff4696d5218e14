"""The clocks: the manual one moves only when told, wakes its sleepers on time and times out ``wait_for``."""

from __future__ import annotations

import asyncio

import pytest

from toolkit.clock import SYSTEM_CLOCK, ManualClock


def test_the_manual_clock_moves_only_when_advanced() -> None:
    clock = ManualClock(start_s=100.0)
    assert clock.monotonic() == 100.0
    clock.advance(0.25)
    clock.advance(0)
    assert clock.monotonic() == 100.25
    with pytest.raises(ValueError):
        clock.advance(-1)
    assert clock.monotonic() == 100.25


async def test_a_sleeper_wakes_when_its_time_is_reached_and_not_before() -> None:
    clock = ManualClock()
    sleeping = asyncio.create_task(clock.sleep(1.0))
    await clock.until_sleeping()
    clock.advance(0.5)
    assert clock.sleepers == 1  # still waiting: half its time has passed
    clock.advance(0.5)
    await asyncio.wait_for(sleeping, 10)
    assert clock.sleepers == 0


async def test_sleepers_wake_in_the_order_of_their_deadlines() -> None:
    clock = ManualClock()
    woken: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woken.append(name)

    tasks = [asyncio.create_task(sleeper("late", 3)), asyncio.create_task(sleeper("early", 1))]
    await clock.until_sleeping(2)
    clock.advance(2)
    await asyncio.wait_for(tasks[1], 10)
    assert woken == ["early"] and clock.sleepers == 1
    clock.advance(1)
    await asyncio.wait_for(tasks[0], 10)
    assert woken == ["early", "late"]


async def test_a_zero_sleep_does_not_wait_for_the_clock() -> None:
    clock = ManualClock()
    await asyncio.wait_for(clock.sleep(0), 10)
    assert clock.sleepers == 0


async def test_wait_for_returns_the_result_when_it_comes_first() -> None:
    clock = ManualClock()
    result: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    waiting = asyncio.create_task(clock.wait_for(result, 5.0))
    await clock.until_sleeping()
    result.set_result("done")
    assert await asyncio.wait_for(waiting, 10) == "done"
    assert clock.sleepers == 0  # its timer is gone


async def test_wait_for_times_out_when_the_clock_passes_the_limit_and_cancels_the_awaitable() -> None:
    clock = ManualClock()
    never: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    waiting = asyncio.create_task(clock.wait_for(never, 5.0))
    await clock.until_sleeping()
    clock.advance(4.999)
    assert not waiting.done() and clock.sleepers == 1
    clock.advance(0.001)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(waiting, 10)
    assert never.cancelled()


async def test_wait_for_on_a_queue_loses_no_item_when_it_times_out() -> None:
    clock = ManualClock()
    queue: asyncio.Queue[int] = asyncio.Queue()
    waiting = asyncio.create_task(clock.wait_for(queue.get(), 1.0))
    await clock.until_sleeping()
    clock.advance(1.0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(waiting, 10)
    queue.put_nowait(7)
    assert await clock.wait_for(queue.get(), 1.0) == 7


async def test_the_system_clock_is_monotonic_and_times_out_with_asyncio() -> None:
    first = SYSTEM_CLOCK.monotonic()
    assert SYSTEM_CLOCK.monotonic() >= first
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        await SYSTEM_CLOCK.wait_for(never, 0)
    answered: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    answered.set_result("now")
    assert await SYSTEM_CLOCK.wait_for(answered, 10) == "now"
