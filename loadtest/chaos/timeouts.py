"""Timeout windows: a share of the donations due inside them carry the simulator's hanging cards, half of them
charged before the silence (``pm_sim_timeout_charged``) and half never arriving (``pm_sim_timeout_lost``). Only a
lookup can tell the two apart; the engine must charge the first exactly once and fail the second."""

from __future__ import annotations

import dataclasses
import random

import orjson

from loadtest.chaos.schedule import Fault, FaultKind
from loadtest.traffic import Kind, PlannedRequest

TIMEOUT_CARDS = ("pm_sim_timeout_charged", "pm_sim_timeout_lost")


def with_timeouts(plan: list[PlannedRequest], faults: list[Fault], seed: int) -> tuple[list[PlannedRequest], int]:
    """``plan`` with hanging cards inside every timeouts window; returns the new plan and how many were changed."""
    windows = [f for f in faults if f.kind is FaultKind.TIMEOUTS]
    rng = random.Random(f"surge-chaos-timeouts-{seed}")
    changed = 0
    result = []
    for request in plan:
        window = next((w for w in windows if w.at_s <= request.due_s < w.end_s), None)
        if window is not None and request.kind is Kind.DONATION and rng.random() < float(window.detail["share"]):
            request = _hanging(request, TIMEOUT_CARDS[changed % 2])
            changed += 1
        result.append(request)
    return result, changed


def _hanging(request: PlannedRequest, card: str) -> PlannedRequest:
    head, _, payload = request.data.partition(b"\r\n\r\n")
    body = orjson.loads(payload)
    body["payment_method"] = card
    new_payload = orjson.dumps(body)
    lines = [
        line if not line.lower().startswith(b"content-length:") else b"Content-Length: %d" % len(new_payload)
        for line in head.split(b"\r\n")
    ]
    data = b"\r\n".join(lines) + b"\r\n\r\n" + new_payload
    return dataclasses.replace(request, kind=Kind.TIMEOUT, data=data)
