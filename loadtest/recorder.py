"""What the run measured: HDR latency histograms (overall, per second, per progress window), status and outcome
counts, and throughput per second — offered (requests due) against achieved (answers received).

Latency is from the time a request was *due* to its answer, so time spent waiting for a connection or behind a
stalled generator counts (coordinated omission avoided). Each answer is filed under the second it arrived in.

Per answer the recorder does one HDR histogram record (the run's total) and two list appends (its second, the live
progress window), summarised exactly when the second or the window ends: an HDR record costs microseconds of pure
Python, and the generator's CPU is taken from what it measures.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from loadtest.traffic import Kind
from toolkit.latency_histogram import PERCENTILES, LatencyHistogram


class Outcome(StrEnum):
    """What an answer means for the request that got it."""

    ACCEPTED = "accepted"  # 201 / 202: the engine took the donation (acknowledged)
    DECLINED = "declined"  # 402: the card was declined, as planned or at random
    LIMITED = "limited"  # 422: the donor's contribution limit binds
    REFUSED = "refused"  # 400 for an invalid request, or a donor past $200 without employer/occupation
    BLOCKED = "blocked"  # 429 card_testing_suspected or 428 challenge_required: velocity limits at work
    IN_PROGRESS = "in_progress"  # 409 on a retry while the first attempt is still charging: retried again
    ABANDONED = "abandoned"  # an impatient client gave up by design (its retry is what counts)
    SHED = "shed"  # 503 / 429 overloaded: the engine refused work it could not do now (an error)
    TIMEOUT = "timeout"  # no answer in time: retried with the same key (an error for that attempt)
    ERROR = "error"  # anything unexpected: 5xx, connection failures, a 2xx for an invalid request …


ERROR_OUTCOMES = frozenset({Outcome.SHED, Outcome.TIMEOUT, Outcome.ERROR})


def classify(kind: Kind, status: int, code: str | None) -> Outcome:
    if kind is Kind.INVALID:
        return Outcome.REFUSED if status == 400 else Outcome.ERROR
    if status in (201, 202):
        return Outcome.ACCEPTED
    if status == 402:
        return Outcome.DECLINED
    if status == 422 and code == "contribution_limit_exceeded":
        return Outcome.LIMITED
    if status == 400 and code == "parameter_missing":
        return Outcome.REFUSED  # employer and occupation are required past the itemization threshold
    if (status, code) in ((429, "card_testing_suspected"), (428, "challenge_required")):
        return Outcome.BLOCKED
    if status == 409 and code == "idempotency_in_progress":
        return Outcome.IN_PROGRESS
    if status in (429, 503):
        return Outcome.SHED
    return Outcome.ERROR


class LatencyList:
    """A second's (or a window's) latencies kept as microseconds; summarised like ``LatencyHistogram.summary_ms``
    (exact nearest-rank percentiles), and frozen into that summary once the second is over, freeing the values."""

    __slots__ = ("_summary", "values")

    def __init__(self) -> None:
        self.values: list[int] = []
        self._summary: dict[str, float] | None = None

    def record_us(self, microseconds: int) -> None:
        self.values.append(microseconds)

    def reset(self) -> None:
        self.values = []

    def freeze(self) -> None:
        self._summary = self.summary_ms()
        self.values = []

    def summary_ms(self) -> dict[str, float]:
        if self._summary is not None:
            return self._summary
        ordered = sorted(self.values)
        count = len(ordered)
        if not count:
            return {"count": 0}

        def at(percentile: float) -> float:
            return round(ordered[max(math.ceil(percentile / 100 * count) - 1, 0)] / 1000, 3)

        summary: dict[str, float] = {"count": count, "mean": round(sum(ordered) / count / 1000, 3)}
        for name, percentile in PERCENTILES:
            summary[name] = at(percentile)
        summary["max"] = round(ordered[-1] / 1000, 3)
        return summary


@dataclass
class SecondStats:
    offered: int = 0  # requests due in this second (first attempts)
    sent: int = 0
    completed: int = 0
    errors: int = 0
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    latency: LatencyList = field(default_factory=LatencyList)

    def as_json(self, second: int) -> dict[str, Any]:
        return {
            "t": second,
            "offered": self.offered,
            "sent": self.sent,
            "completed": self.completed,
            "errors": self.errors,
            "statuses": dict(self.statuses),
            "outcomes": dict(self.outcomes),
            "latency_ms": self.latency.summary_ms(),
        }


class Recorder:
    def __init__(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self.latency = LatencyHistogram(3)
        # Of each HTTP answer: its latency less the processor's share (Server-Timing) — Surge's own time — and the
        # latency of the 202s that were queued without a processor call (not charges that timed out into a 202).
        self.own_latency = LatencyHistogram(3)
        self.deferred_latency = LatencyHistogram(3)
        self.window_latency = LatencyList()
        self.window_own_latency = LatencyList()  # Surge's own time (HTTP answers), per window as well
        self.statuses: collections.Counter[str] = collections.Counter()
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.by_kind: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.error_kinds: collections.Counter[str] = collections.Counter()
        self.error_examples: dict[str, str] = {}
        self.seconds: dict[int, SecondStats] = collections.defaultdict(SecondStats)
        self._answer_second = -1  # the second the latest answer was filed under: earlier ones are complete
        self.offered = self.sent = self.completed = self.errors = self.retries = 0
        self.window_completed = self.window_errors = self.window_offered = 0

    def _second(self, now_ns: int) -> SecondStats:
        return self.seconds[max(0, (now_ns - self.start_ns) // 1_000_000_000)]

    def due(self, due_ns: int, retry: bool) -> None:
        """A request fell due; retries are counted apart, so that ``offered`` follows the profile."""
        if retry:
            self.retries += 1
            return
        self.offered += 1
        self.window_offered += 1
        self._second(due_ns).offered += 1

    def sending(self, now_ns: int) -> None:
        self.sent += 1
        self._second(now_ns).sent += 1

    def answered(
        self,
        kind: Kind,
        status: str,
        outcome: Outcome,
        due_ns: int,
        now_ns: int,
        detail: str = "",
        processor_us: int = 0,
    ) -> None:
        latency_us = (now_ns - due_ns) // 1000
        if status.isdigit():  # an HTTP answer, not a timeout or a lost connection
            own_us = max(0, latency_us - processor_us)
            self.own_latency.record_us(own_us)
            self.window_own_latency.record_us(own_us)
            if status == "202" and processor_us == 0:  # queued at once, not a charge that timed out
                self.deferred_latency.record_us(latency_us)
        number = max(0, (now_ns - self.start_ns) // 1_000_000_000)
        if number != self._answer_second:
            if number > self._answer_second >= 0 and self._answer_second in self.seconds:
                self.seconds[self._answer_second].latency.freeze()
            self._answer_second = number
        second = self.seconds[number]
        second.completed += 1
        second.statuses[status] += 1
        second.outcomes[outcome.value] += 1
        second.latency.record_us(latency_us)
        self.latency.record_us(latency_us)
        self.window_latency.record_us(latency_us)
        self.completed += 1
        self.window_completed += 1
        self.statuses[status] += 1
        self.outcomes[outcome.value] += 1
        self.by_kind[kind.value][outcome.value] += 1
        if outcome in ERROR_OUTCOMES:
            second.errors += 1
            self.errors += 1
            self.window_errors += 1
            label = f"{outcome.value} {status}"
            self.error_kinds[label] += 1
            if detail and label not in self.error_examples:
                self.error_examples[label] = detail[:300]

    def take_window(self) -> dict[str, float]:
        """Counts and latency since the last call (for live progress), then start a new window."""
        window = {
            "offered": self.window_offered,
            "completed": self.window_completed,
            "errors": self.window_errors,
            **{k: v for k, v in self.window_latency.summary_ms().items() if k in ("p50", "p99")},
            **{f"own_{k}": v for k, v in self.window_own_latency.summary_ms().items() if k in ("p50", "p99")},
        }
        self.window_latency.reset()
        self.window_own_latency.reset()
        self.window_completed = self.window_errors = self.window_offered = 0
        return window

    def timeline(self, until_s: float) -> list[dict[str, Any]]:
        last = max([*self.seconds.keys(), math.ceil(until_s) - 1, 0])
        return [self.seconds[s].as_json(s) if s in self.seconds else SecondStats().as_json(s) for s in range(last + 1)]

    def totals(self) -> dict[str, Any]:
        return {
            "offered": self.offered,
            "sent": self.sent,
            "completed": self.completed,
            "retries": self.retries,
            "errors": self.errors,
            "statuses": dict(sorted(self.statuses.items())),
            "outcomes": dict(self.outcomes.most_common()),
            "by_kind": {kind: dict(counts.most_common()) for kind, counts in sorted(self.by_kind.items())},
            "error_kinds": dict(self.error_kinds.most_common()),
            "error_examples": self.error_examples,
        }
