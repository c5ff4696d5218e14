"""The open-model generator: launches each planned request when it falls due, whatever earlier ones are doing.

One scheduler loop wakes when the next request falls due (at most every 10 ms) and sends every request now due; it
never waits for answers, so a slow engine meets the same arrival rate as a fast one. A logical request is a first
attempt and, after a timeout, a lost connection or a 409 "still in progress", retries with the same bytes — the same
``Idempotency-Key`` — as a donation form's JavaScript would.

The generator shares the cores with what it measures, so the common case is cheap: a first attempt finding an idle
connection is written from the scheduler itself and its answer handled by a callback from the connection, with no
task, no future and no timer of its own; its deadline waits in a queue (one per timeout, so in time order) that the
scheduler's wake-ups expire. A request finding no idle connection, and every retry, runs as a task (``_attempts``).
What the client was told is kept for the audit: every donation acknowledged with 2xx (id and amount) and every one
declined with 402.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from loadtest.http_client import ConnectionPool, HttpError, HttpResponse, _Connection
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
        # The deadlines of exchanges sent on the fast path, one queue per timeout (so each is in time order), expired
        # by the scheduler's own wake-ups: no timer per request.
        self._deadlines: collections.deque[tuple[int, _Exchange]] = collections.deque()
        self._impatient_deadlines: collections.deque[tuple[int, _Exchange]] = collections.deque()
        self._timeout_ns = int(policy.timeout_s * 1e9)
        self._impatient_timeout_ns = int(policy.impatient_timeout_s * 1e9)

    async def run(self, finish_timeout_s: float = 120.0) -> None:
        """Send the whole plan on schedule, then wait (at most ``finish_timeout_s``) for the last answers."""
        start_ns = self.recorder.start_ns
        plan, count, index = self.plan, len(self.plan), 0
        while index < count:
            now_ns = time.perf_counter_ns()
            self._expire(now_ns)
            while index < count and start_ns + int(plan[index].due_s * 1e9) <= now_ns:
                request = plan[index]
                index += 1
                self.launched += 1
                if self.in_flight >= self.policy.in_flight_max:
                    due_ns = start_ns + int(request.due_s * 1e9)
                    self.recorder.due(due_ns, retry=False)
                    self.recorder.answered(request.kind, "generator", Outcome.ERROR, due_ns, now_ns, "generator full")
                    continue
                self._launch(request, start_ns + int(request.due_s * 1e9), now_ns)
            if index < count:
                wait_s = (start_ns + int(plan[index].due_s * 1e9) - time.perf_counter_ns()) / 1e9
                await asyncio.sleep(min(max(wait_s, SCHEDULER_TICK_S), 0.01))
        deadline = time.monotonic() + finish_timeout_s
        while (self.in_flight or self._tasks) and time.monotonic() < deadline:
            self._expire(time.perf_counter_ns())
            await asyncio.sleep(0.01)
        for _, exchange in (*self._deadlines, *self._impatient_deadlines):
            exchange.abandon()  # still unanswered at the finish: as a cancelled task, recorded nowhere
        if self._tasks:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- the fast path: the first attempt on an idle connection, answered by callback ------------------------------

    def _launch(self, request: PlannedRequest, due_ns: int, now_ns: int) -> None:
        self.in_flight += 1
        connection = self.pool.take_idle()
        if connection is None:  # none idle: the coroutine path waits for one, or opens one
            self._spawn(request, 1, due_ns)
            return
        recorder = self.recorder
        recorder.due(due_ns, retry=False)
        recorder.sending(now_ns)
        impatient = request.impatient
        exchange = _Exchange(self, request, due_ns, connection, impatient)
        try:
            connection.send_calling(request.data, exchange.answered)
        except HttpError as error:
            exchange.answered(error)
            return
        if impatient:
            self._impatient_deadlines.append((now_ns + self._impatient_timeout_ns, exchange))
        else:
            self._deadlines.append((now_ns + self._timeout_ns, exchange))

    def _expire(self, now_ns: int) -> None:
        for deadlines in (self._deadlines, self._impatient_deadlines):
            while deadlines and deadlines[0][0] <= now_ns:
                deadlines.popleft()[1].time_out()

    def _first_answer(self, exchange: _Exchange, answer: HttpResponse | HttpError | TimeoutError) -> None:
        request = exchange.request
        outcome, retry_after_s = self._judge(request, exchange.impatient, exchange.due_ns, answer)
        if outcome in _RETRIED and request.kind is not Kind.CARD_TESTING and self.policy.attempts_max > 1:
            # Still in flight: the retry's task ends it (counting it out here would let ``run`` finish, and cancel
            # the retry, in the moment before the task starts).
            self._spawn(request, 2, time.perf_counter_ns() + int(self._retry_delay_s(retry_after_s, 1) * 1e9))
            return
        self.record.final[outcome.value] += 1
        self.in_flight -= 1

    # -- the coroutine path: waiting for a connection, and retries ----------------------------------------------------

    def _spawn(self, request: PlannedRequest, first_attempt: int, due_ns: int) -> None:
        """Run the request's remaining attempts as a task; it is already counted in flight, and the task ends it."""
        task = asyncio.get_running_loop().create_task(self._exchange(request, first_attempt, due_ns))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _exchange(self, request: PlannedRequest, first_attempt: int = 1, due_ns: int | None = None) -> None:
        try:
            await self._attempts(request, first_attempt, due_ns)
        finally:
            self.in_flight -= 1

    async def _attempts(self, request: PlannedRequest, first_attempt: int = 1, due_ns: int | None = None) -> None:
        policy, recorder = self.policy, self.recorder
        if due_ns is None:
            due_ns = recorder.start_ns + int(request.due_s * 1e9)
        retries_allowed = request.kind is not Kind.CARD_TESTING  # bots move on; donors' forms retry
        outcome = Outcome.ERROR
        for attempt in range(first_attempt, policy.attempts_max + 1):
            delay_s = (due_ns - time.perf_counter_ns()) / 1e9
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            recorder.due(due_ns, retry=attempt > 1)
            recorder.sending(time.perf_counter_ns())
            impatient = request.impatient and attempt == 1
            timeout_s = policy.impatient_timeout_s if impatient else policy.timeout_s
            answer: HttpResponse | HttpError | TimeoutError
            try:
                answer = await self.pool.request(request.data, timeout_s)
            except (TimeoutError, HttpError) as error:
                answer = error
            outcome, retry_after_s = self._judge(request, impatient, due_ns, answer)
            if outcome not in _RETRIED or not retries_allowed:
                break
            due_ns = time.perf_counter_ns() + int(self._retry_delay_s(retry_after_s, attempt) * 1e9)
        self.record.final[outcome.value] += 1

    # -- shared by both paths ----------------------------------------------------------------------------------------

    def _judge(
        self, request: PlannedRequest, impatient: bool, due_ns: int, answer: HttpResponse | HttpError | TimeoutError
    ) -> tuple[Outcome, float]:
        """Record one attempt's answer; its outcome and the wait before a retry (before backoff)."""
        recorder = self.recorder
        now_ns = time.perf_counter_ns()
        retry_after_s = self.policy.retry_delay_s
        if isinstance(answer, TimeoutError):
            outcome = Outcome.ABANDONED if impatient else Outcome.TIMEOUT
            recorder.answered(request.kind, outcome.value, outcome, due_ns, now_ns)
        elif isinstance(answer, HttpError):
            outcome = Outcome.ERROR
            recorder.answered(request.kind, "connection", outcome, due_ns, now_ns, str(answer))
        else:
            body = _json(answer.body)
            code = _error_code(body)
            outcome = classify(request.kind, answer.status, code)
            detail = "" if outcome is Outcome.ACCEPTED else answer.body[:300].decode(errors="replace")
            recorder.answered(request.kind, str(answer.status), outcome, due_ns, now_ns, detail, answer.processor_us)
            self._remember(request, outcome, body)
            if outcome in (Outcome.IN_PROGRESS, Outcome.SHED):
                retry_after_s = 1.0  # the engine's Retry-After for these is 1-5 s; a form retries soon
        return outcome, retry_after_s

    def _retry_delay_s(self, retry_after_s: float, attempt: int) -> float:
        policy = self.policy
        return min(retry_after_s * policy.retry_backoff ** (attempt - 1), policy.retry_delay_max_s)

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


class _Exchange:
    """A first attempt sent on the fast path: answered once, by the connection's callback or by its deadline."""

    __slots__ = ("connection", "done", "due_ns", "generator", "impatient", "request")

    def __init__(
        self, generator: Generator, request: PlannedRequest, due_ns: int, connection: _Connection, impatient: bool
    ) -> None:
        self.generator = generator
        self.request = request
        self.due_ns = due_ns
        self.connection = connection
        self.impatient = impatient
        self.done = False

    def answered(self, answer: HttpResponse | HttpError) -> None:
        if self.done:
            return
        self.done = True
        if isinstance(answer, HttpError):
            self.connection.close()
        self.generator.pool.release(self.connection)
        self.generator._first_answer(self, answer)

    def time_out(self) -> None:
        if self.done:
            return
        self.done = True
        self.connection.forget()  # its answer, if it ever comes, must not be read as another request's
        self.generator.pool.release(self.connection)
        self.generator._first_answer(self, TimeoutError())

    def abandon(self) -> None:
        if not self.done:
            self.done = True
            self.connection.forget()
            self.generator.pool.release(self.connection)


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
