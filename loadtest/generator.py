"""The open-model generator: launches each planned request when it falls due, whatever earlier ones are doing.

One scheduler loop wakes about every millisecond and starts a task for every request now due; it never waits for
answers, so a slow engine meets the same arrival rate as a fast one. Each task runs one logical request: a first
attempt and, after a timeout, a lost connection or a 409 "still in progress", retries with the same bytes — the same
``Idempotency-Key`` — as a donation form's JavaScript would. What the client was told is kept for the audit: every
donation acknowledged with 2xx (id and amount) and every one declined with 402.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from loadtest.http_client import ConnectionPool, HttpError
from loadtest.recorder import Outcome, Recorder, classify
from loadtest.traffic import Kind, PlannedRequest

# The scheduler's shortest sleep. uvloop's timers have millisecond resolution: a shorter sleep returns at once, and
# a loop waiting for a request due in 0.3 ms would spin a whole core (measured: the generator took 1.3 cores at
# 2,000 requests/s). Requests start up to this late, and that delay is part of their measured latency.
SCHEDULER_TICK_S = 0.001

_RETRIED = frozenset({Outcome.TIMEOUT, Outcome.ABANDONED, Outcome.IN_PROGRESS, Outcome.SHED, Outcome.ERROR})


@dataclass(frozen=True)
class ClientPolicy:
    timeout_s: float = 10.0  # longer than the engine's charge timeout (8 s): an answer normally comes
    impatient_timeout_s: float = 0.15  # impatient clients give up this soon on their first attempt
    attempts_max: int = 5
    retry_delay_s: float = 0.5  # after a timeout or a lost connection; 409 and 503 wait for their Retry-After
    retry_backoff: float = 1.0  # each further retry waits this many times longer (2: exponential backoff) …
    retry_delay_max_s: float = 8.0  # … up to this
    connections_max: int = 512
    in_flight_max: int = 50_000  # beyond this the generator itself is the bottleneck: counted as errors


@dataclass
class ClientRecord:
    """What clients were told: the audit's side of the comparison."""

    acknowledged: dict[str, int] = field(default_factory=dict)  # donation id → amount (minor units), from 2xx
    declined: set[str] = field(default_factory=set)  # donation ids answered 402
    final: collections.Counter[str] = field(default_factory=collections.Counter)  # last outcome per request
    mismatches: list[str] = field(default_factory=list)  # 2xx bodies that disagree with what was sent


class Generator:
    def __init__(
        self, plan: list[PlannedRequest], pool: ConnectionPool, policy: ClientPolicy, recorder: Recorder
    ) -> None:
        self.plan = plan
        self.pool = pool
        self.policy = policy
        self.recorder = recorder
        self.record = ClientRecord()
        self.in_flight = 0
        self.launched = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, finish_timeout_s: float = 120.0) -> None:
        """Send the whole plan on schedule, then wait (at most ``finish_timeout_s``) for the last answers."""
        loop = asyncio.get_running_loop()
        start_ns = self.recorder.start_ns
        plan, count, index = self.plan, len(self.plan), 0
        while index < count:
            now_ns = time.perf_counter_ns()
            while index < count and start_ns + int(plan[index].due_s * 1e9) <= now_ns:
                request = plan[index]
                index += 1
                self.launched += 1
                if self.in_flight >= self.policy.in_flight_max:
                    due_ns = start_ns + int(request.due_s * 1e9)
                    self.recorder.due(due_ns, retry=False)
                    self.recorder.answered(request.kind, "generator", Outcome.ERROR, due_ns, now_ns, "generator full")
                    continue
                task = loop.create_task(self._exchange(request))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if index < count:
                wait_s = (start_ns + int(plan[index].due_s * 1e9) - time.perf_counter_ns()) / 1e9
                await asyncio.sleep(min(max(wait_s, SCHEDULER_TICK_S), 0.01))
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=finish_timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _exchange(self, request: PlannedRequest) -> None:
        self.in_flight += 1
        try:
            await self._attempts(request)
        finally:
            self.in_flight -= 1

    async def _attempts(self, request: PlannedRequest) -> None:
        policy, recorder = self.policy, self.recorder
        due_ns = recorder.start_ns + int(request.due_s * 1e9)
        retries_allowed = request.kind is not Kind.CARD_TESTING  # bots move on; donors' forms retry
        outcome = Outcome.ERROR
        for attempt in range(1, policy.attempts_max + 1):
            delay_s = (due_ns - time.perf_counter_ns()) / 1e9
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            recorder.due(due_ns, retry=attempt > 1)
            recorder.sending(time.perf_counter_ns())
            impatient = request.impatient and attempt == 1
            timeout_s = policy.impatient_timeout_s if impatient else policy.timeout_s
            retry_after_s = policy.retry_delay_s
            try:
                response = await self.pool.request(request.data, timeout_s)
            except TimeoutError:
                outcome = Outcome.ABANDONED if impatient else Outcome.TIMEOUT
                recorder.answered(request.kind, outcome.value, outcome, due_ns, time.perf_counter_ns())
            except HttpError as error:
                outcome = Outcome.ERROR
                recorder.answered(request.kind, "connection", outcome, due_ns, time.perf_counter_ns(), str(error))
            else:
                now_ns = time.perf_counter_ns()
                body = _json(response.body)
                code = _error_code(body)
                outcome = classify(request.kind, response.status, code)
                detail = "" if outcome is Outcome.ACCEPTED else response.body[:300].decode(errors="replace")
                recorder.answered(request.kind, str(response.status), outcome, due_ns, now_ns, detail)
                self._remember(request, outcome, body)
                if outcome in (Outcome.IN_PROGRESS, Outcome.SHED):
                    retry_after_s = 1.0  # the engine's Retry-After for these is 1-5 s; a form retries soon
            if outcome not in _RETRIED or not retries_allowed:
                break
            retry_after_s = min(retry_after_s * policy.retry_backoff ** (attempt - 1), policy.retry_delay_max_s)
            due_ns = time.perf_counter_ns() + int(retry_after_s * 1e9)
        self.record.final[outcome.value] += 1

    def _remember(self, request: PlannedRequest, outcome: Outcome, body: Any) -> None:
        if not isinstance(body, dict):
            return
        if outcome is Outcome.ACCEPTED:
            donation_id = body.get("id")
            if not isinstance(donation_id, str):
                self.record.mismatches.append(f"request {request.number}: 2xx without a donation id")
                return
            if body.get("amount") != request.amount_minor:
                self.record.mismatches.append(
                    f"request {request.number}: sent {request.amount_minor}, 2xx says {body.get('amount')}"
                )
            self.record.acknowledged[donation_id] = request.amount_minor
        elif outcome is Outcome.DECLINED:
            donation = (body.get("error") or {}).get("donation") or {}
            if isinstance(donation, dict) and isinstance(donation.get("id"), str):
                self.record.declined.add(donation["id"])


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _error_code(body: Any) -> str | None:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            return code if isinstance(code, str) else None
    return None
