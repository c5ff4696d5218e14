"""Webhook delivery as processors really do it: late, twice, out of order, and retried until acknowledged.

The simulated processor records every event it would send (``simulator.events``); this deliverer reads them from
the shared database, signs them as the processor does and POSTs them to the engine's ``/v1/webhooks/{processor}``.
A seeded random source decides, per event, whether it is held back (0.2-3 s), delivered twice (at once, or again
later), and each batch read is shuffled. A delivery is retried with backoff until the engine answers 2xx — through
worker kills and database restarts — so an event can only be lost by the engine, never by the deliverer.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg

from adapters.simulated import SignedWebhook, SimulatedProcessor
from loadtest.chaos.schedule import ChaosOptions

POLL_INTERVAL_S = 0.2
RETRY_DELAY_S = (0.2, 0.5, 1.0, 2.0)  # then 2 s each time
_READ_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


@dataclass
class DeliveryLog:
    seen: dict[str, str] = field(default_factory=dict)  # event id → type
    attempts: Counter[str] = field(default_factory=Counter)  # event id → POSTs sent
    acknowledged: Counter[str] = field(default_factory=Counter)  # event id → 2xx answers
    duplicates_answered: Counter[str] = field(default_factory=Counter)  # 2xx answers saying "duplicate"
    planned_twice: set[str] = field(default_factory=set)
    delayed: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)  # events given up on

    def summary(self) -> dict[str, Any]:
        return {
            "events": len(self.seen),
            "posts": sum(self.attempts.values()),
            "acknowledged_events": sum(1 for n in self.acknowledged.values() if n),
            "delivered_twice_or_more": sum(1 for n in self.acknowledged.values() if n >= 2),
            "delayed": len(self.delayed),
            "answered_duplicate": sum(self.duplicates_answered.values()),
            "by_type": dict(Counter(self.seen.values()).most_common()),
            "given_up": self.failures[:20],
        }


class WebhookDeliverer:
    def __init__(
        self, processor: SimulatedProcessor, url: str, seed: int, options: ChaosOptions, processor_name: str
    ) -> None:
        self._processor = processor
        self._endpoint = f"{url}/v1/webhooks/{processor_name}"
        self._rng = random.Random(f"surge-chaos-webhooks-{seed}")
        self._options = options
        self.log = DeliveryLog()
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._stopping = False

    async def run(self, stop: asyncio.Event) -> None:
        """Poll and deliver until ``stop`` is set; then deliver what is left (see ``finish``)."""
        while not stop.is_set():
            await self.poll()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_INTERVAL_S)

    async def poll(self) -> int:
        """Read the processor's events and start delivering the new ones; returns how many were new."""
        try:
            events = await self._processor.webhooks()
        except _READ_ERRORS:
            return 0  # the database is down: read again on the next poll
        fresh = [event for event in events if event.event_id not in self.log.seen]
        if self._options.webhook_reorder:
            self._rng.shuffle(fresh)
        for event in fresh:
            self.log.seen[event.event_id] = event.event_type
            delay_s = 0.0
            if self._rng.random() < self._options.webhook_delay_share:
                delay_s = 0.2 + self._rng.random() * 2.8
                self.log.delayed.add(event.event_id)
            self._start(event, delay_s)
            if self._rng.random() < self._options.webhook_duplicate_share:
                self.log.planned_twice.add(event.event_id)
                at_once = self._rng.random() < 0.5
                self._start(event, delay_s if at_once else delay_s + 0.5 + self._rng.random() * 4.5)
        return len(fresh)

    async def finish(self, timeout_s: float) -> None:
        """Deliver every event recorded so far (one last read), waiting at most ``timeout_s`` for the engine."""
        deadline = time.monotonic() + timeout_s
        while True:
            await self.poll()
            pending = set(self._tasks)
            if not pending:
                break
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                break
            await asyncio.wait(pending, timeout=remaining_s)
        await self.close()

    async def close(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for event_id, count in self.log.acknowledged.items():
            if count == 0:
                self.log.failures.append(event_id)
        if self._session is not None:
            await self._session.close()

    def _start(self, event: SignedWebhook, delay_s: float) -> None:
        self.log.acknowledged.setdefault(event.event_id, 0)
        task = asyncio.create_task(self._deliver(event.event_id, delay_s))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, event_id: str, delay_s: float) -> None:
        if delay_s > 0:
            await asyncio.sleep(delay_s)  # the fault itself: a delivery held back
        attempt = 0
        while not self._stopping:
            attempt += 1
            try:
                # Signed afresh for each attempt, as a processor's retry is: the timestamp must be recent.
                event = await self._processor.webhook(event_id)
                if await self._post(event):
                    return
            except _READ_ERRORS:
                pass
            await asyncio.sleep(RETRY_DELAY_S[min(attempt, len(RETRY_DELAY_S)) - 1])

    async def _post(self, event: SignedWebhook) -> bool:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self.log.attempts[event.event_id] += 1
        try:
            async with self._session.post(self._endpoint, data=event.payload, headers=event.headers) as response:
                body = await response.json(content_type=None) if response.status < 300 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return False
        if response.status >= 300:
            return False
        self.log.acknowledged[event.event_id] += 1
        if isinstance(body, dict) and body.get("duplicate"):
            self.log.duplicates_answered[event.event_id] += 1
        return True
