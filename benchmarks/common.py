"""Helpers shared by the benchmarks: CPU accounting, machine details, tables and JSON results."""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

RESULTS_FOLDER = Path(__file__).resolve().parent / "results"


def distribution(values: Sequence[float], digits: int = 3) -> dict[str, float]:
    """Count, mean, p50, p99 and max of a small sample (batch sizes, commit times) kept in full."""
    if not values:
        return {"count": 0}
    ordered = sorted(values)

    def at(fraction: float) -> float:
        return round(ordered[min(int(fraction * len(ordered)), len(ordered) - 1)], digits)

    return {
        "count": len(ordered),
        "mean": round(sum(ordered) / len(ordered), digits),
        "p50": at(0.50),
        "p99": at(0.99),
        "max": round(ordered[-1], digits),
    }


@dataclass(frozen=True)
class _CpuSample:
    wall_s: float
    machine_busy_s: float
    machine_total_s: float
    process_s: float
    database_s: float


class CpuMeter:
    """How the machine's CPU was spent over an interval: this process, the database server, everything else.

    The benchmark and PostgreSQL share the machine's cores, so throughput is bounded by their sum; this splits it,
    and shows how much of the machine other processes (not part of the benchmark) took meanwhile.
    """

    def __init__(self, database_pid: int | None = None) -> None:
        self._database_pid = database_pid
        self._start = self._sample()

    def restart(self) -> None:
        self._start = self._sample()

    def summary(self) -> dict[str, float]:
        end = self._sample()
        wall = end.wall_s - self._start.wall_s
        busy = end.machine_busy_s - self._start.machine_busy_s
        total = end.machine_total_s - self._start.machine_total_s
        process = end.process_s - self._start.process_s
        database = end.database_s - self._start.database_s

        def cores(seconds: float) -> float:
            return round(max(seconds, 0) / wall, 2) if wall else 0.0

        return {
            "wall_s": round(wall, 3),
            "cores": os.cpu_count() or 1,
            "machine_busy_percent": round(100 * busy / total, 1) if total else 0.0,
            "benchmark_process_cores": cores(process),
            "postgres_cores": cores(database),
            "other_processes_cores": cores(busy - process - database),
        }

    def _sample(self) -> _CpuSample:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        busy, total = machine_cpu_s()
        database = process_tree_cpu_s(self._database_pid) if self._database_pid else 0.0
        return _CpuSample(time.perf_counter(), busy, total, usage.ru_utime + usage.ru_stime, database)


def machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot; zeros where /proc is missing."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0, 0.0
    ticks = [int(value) for value in fields[:8]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    hertz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hertz, sum(ticks) / hertz


def process_tree_cpu_s(root_pid: int) -> float:
    """CPU seconds of a process and its children (PostgreSQL's postmaster and its backends)."""
    hertz = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name may hold spaces and parentheses: the fields start after the last ')'.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended meanwhile
        pid, parent = int(stat.parent.name), int(fields[1])
        if pid == root_pid:
            total += sum(int(value) for value in fields[11:15])  # its own time and its ended children's
        elif parent == root_pid:
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / hertz


def machine_details() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_mb": _memory_mb(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def print_table(title: str, rows: Sequence[tuple[str, object]]) -> None:
    width = max(len(label) for label, _ in rows)
    print(f"\n{title}\n{'-' * len(title)}")
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


def write_results(name: str, results: Mapping[str, Any]) -> Path:
    RESULTS_FOLDER.mkdir(parents=True, exist_ok=True)
    path = RESULTS_FOLDER / f"{name}.json"
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    return path
