"""Processor outages and slowdowns, opened in the running engines through the simulated processor's live control
file (``SURGE_SIM_FAULT_CONTROL_FILE``, read by adapters/simulated/faults.py): absolute times, so every engine
worker — also one started again after a kill — sees the same windows."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from adapters.simulated.faults import CONTROL_FILE_VARIABLE
from loadtest.chaos.schedule import Fault, FaultKind


def control_environment(path: Path) -> dict[str, str]:
    return {CONTROL_FILE_VARIABLE: str(path)}


def write_control(path: Path, faults: list[Fault], load_started_epoch_s: float) -> dict[str, list[list[float]]]:
    """Write the outage and slowdown windows of ``faults`` (times after ``load_started_epoch_s``) atomically."""
    outages = [
        [load_started_epoch_s + f.at_s, load_started_epoch_s + f.end_s]
        for f in faults
        if f.kind is FaultKind.PROCESSOR_OUTAGE
    ]
    slowdowns = [
        [load_started_epoch_s + f.at_s, load_started_epoch_s + f.end_s, float(f.detail["factor"])]
        for f in faults
        if f.kind is FaultKind.PROCESSOR_SLOW
    ]
    control = {"outages": outages, "slowdowns": slowdowns}
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(orjson.dumps(control))
    os.replace(temporary, path)  # a reader sees the old file or the new one, never half of one
    return control
