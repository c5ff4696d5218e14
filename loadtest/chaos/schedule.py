"""The fault schedule: every fault of a rehearsal and when it happens, drawn from the seed and the duration only.

Disruptive faults (a worker killed, PostgreSQL stopped, a processor outage or slowdown, a timeout window) each take
a slot of their own in the middle of the run, so that their effects can be told apart on the charts; money faults
(refunds, disputes) are spread over the same span, and every fault ends well before the load does, leaving the
last part of the run to show recovery. The schedule is data: ``as_json`` is what the report draws.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

FIRST_FAULT_AT = 0.12  # fraction of the run before the first fault: a baseline to compare with
LAST_FAULT_BY = 0.8  # fraction of the run by which every disruptive fault has ended


class FaultKind(StrEnum):
    WORKER_KILL = "worker_kill"  # SIGKILL one engine worker, then start it again
    POSTGRES_STOP = "postgres_stop"  # pg_ctl stop -m immediate, down for the window, then start
    PROCESSOR_OUTAGE = "processor_outage"  # the processor refuses every call (503) for the window
    PROCESSOR_SLOW = "processor_slow"  # the processor's latency multiplied by ``factor`` for the window
    TIMEOUTS = "timeouts"  # donations in the window hang at the processor: some charged, some lost
    REFUNDS = "refunds"  # a batch of refunds: full, partial, and pairs sent at once with one key
    DISPUTE_OPEN = "dispute_open"
    DISPUTE_CLOSE = "dispute_close"


DISRUPTIVE = (
    FaultKind.WORKER_KILL,
    FaultKind.POSTGRES_STOP,
    FaultKind.PROCESSOR_OUTAGE,
    FaultKind.PROCESSOR_SLOW,
    FaultKind.TIMEOUTS,
)


@dataclass(frozen=True)
class ChaosOptions:
    workers: int = 2  # engine processes sharing the port; one is killed at a time, the others go on serving
    postgres: bool = True  # False when the database is not ours to stop (--database-url)
    webhook_duplicate_share: float = 0.3  # deliveries sent twice (some at once, some later)
    webhook_delay_share: float = 0.3  # deliveries held back for 0.2-3 s
    webhook_reorder: bool = True  # each poll's events delivered in a shuffled order
    timeout_share: float = 0.15  # of donations due inside a timeouts window
    refund_batch_size: int = 6


@dataclass(frozen=True)
class Fault:
    at_s: float  # seconds after the load started
    kind: FaultKind
    duration_s: float = 0.0  # 0 for instant faults
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def end_s(self) -> float:
        return self.at_s + self.duration_s

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "kind": self.kind.value}


def build_schedule(seed: int, duration_s: float, options: ChaosOptions | None = None) -> list[Fault]:
    """The faults for a run of ``duration_s`` seconds, ordered by time; the same arguments give the same list."""
    options = options or ChaosOptions()
    rng = random.Random(f"surge-chaos-{seed}")  # a string seed is hashed with SHA-512: stable across runs
    start, end = FIRST_FAULT_AT * duration_s, LAST_FAULT_BY * duration_s
    rounds = max(1, math.floor(duration_s / 45))  # one of each disruptive fault per 45 s of load
    kinds = [kind for kind in DISRUPTIVE if kind is not FaultKind.POSTGRES_STOP or options.postgres] * rounds
    rng.shuffle(kinds)
    slot_s = (end - start) / len(kinds)
    faults: list[Fault] = []
    for index, kind in enumerate(kinds):
        slot_start = start + index * slot_s
        faults.append(_disruption(rng, kind, slot_start, slot_s, options))
    refund_batches = max(2, math.floor(duration_s / 12))
    for index in range(refund_batches):
        at_s = start + (index + rng.random()) * (end - start) / refund_batches
        faults.append(Fault(round(at_s, 3), FaultKind.REFUNDS, detail={"batch": options.refund_batch_size}))
    disputes = max(2, math.floor(duration_s / 15))
    for index in range(disputes):
        at_s = start + (index + rng.random()) * (end - start) / disputes
        close_s = min(at_s + 2 + rng.random() * 6, duration_s * 0.95)
        detail = {"dispute": index, "outcome": "won" if rng.random() < 0.5 else "lost"}
        faults.append(Fault(round(at_s, 3), FaultKind.DISPUTE_OPEN, detail={"dispute": index}))
        faults.append(Fault(round(close_s, 3), FaultKind.DISPUTE_CLOSE, detail=detail))
    faults.sort(key=lambda fault: (fault.at_s, fault.kind.value))
    return faults


def _disruption(rng: random.Random, kind: FaultKind, slot_start: float, slot_s: float, options: ChaosOptions) -> Fault:
    # A window fills at most 70 % of its slot and starts in its first fifth: the rest of the slot shows recovery.
    at_s = round(slot_start + rng.random() * slot_s * 0.2, 3)
    longest_s = slot_s * 0.7
    if kind is FaultKind.WORKER_KILL:
        return Fault(at_s, kind, detail={"worker": rng.randrange(options.workers)})
    if kind is FaultKind.POSTGRES_STOP:
        return Fault(at_s, kind, round(min(longest_s, 1.0 + rng.random() * 2.0), 3))
    if kind is FaultKind.PROCESSOR_OUTAGE:
        return Fault(at_s, kind, round(min(longest_s, 2.0 + rng.random() * 4.0), 3))
    if kind is FaultKind.PROCESSOR_SLOW:
        factor = round(3 + rng.random() * 9, 1)  # the realistic 250 ms median becomes 0.75-3 s
        return Fault(at_s, kind, round(min(longest_s, 3.0 + rng.random() * 5.0), 3), {"factor": factor})
    if kind is FaultKind.TIMEOUTS:
        return Fault(at_s, kind, round(min(longest_s, 2.0 + rng.random() * 4.0), 3), {"share": options.timeout_share})
    raise ValueError(f"{kind} is not a disruptive fault")


def schedule_json(faults: list[Fault]) -> list[dict[str, Any]]:
    return [fault.as_json() for fault in faults]
