"""Helpers shared by the benchmarks: CPU accounting, machine details, tables and JSON results."""

from __future__ import annotations

import os
import platform
import re
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import uvloop

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


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of one process alone, not its children: the load generator's own cost, when the
    engine it started is its child."""
    if pid == os.getpid():
        return time.process_time()  # nanosecond-precise; /proc counts in clock ticks (10 ms)
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / _HERTZ if fields else 0.0


def process_tree_cpu_s(root_pid: int) -> float:
    """CPU seconds of a process and all its descendants, live or ended (PostgreSQL's postmaster and its backends; an
    engine and its workers). Each live process's own time and that of its children it has reaped (fields 14-17 of
    ``/proc/PID/stat``) are counted once, so a backend that exited mid-interval still counts, through its parent."""
    total = 0
    for pid in _descendants(root_pid):
        fields = _stat_fields(pid)
        if fields:
            total += sum(int(value) for value in fields[11:15])
    return total / _HERTZ


_HERTZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str] | None:
    try:
        # The command name may hold spaces and parentheses: the fields start after the last ')'.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None  # the process ended meanwhile


def _descendants(root_pid: int) -> list[int]:
    """The process and its descendants, from ``/proc/PID/task/TID/children`` (no scan of every process on the
    machine: the measurement should cost the measuring process next to nothing)."""
    found, pending = [], [root_pid]
    while pending:
        pid = pending.pop()
        found.append(pid)
        for children in Path(f"/proc/{pid}/task").glob("*/children"):
            try:
                pending.extend(int(child) for child in children.read_text().split())
            except (OSError, ValueError):
                continue
    return found


class CpuClock:
    """Cores used over an interval by named processes, by everything else on the machine (other users of the two
    cores disturb a measurement, so they are reported) and the share of the time some runnable task waited for a
    CPU (Linux pressure stall information).

    ``own`` names the processes counted alone, without their children: the load generator starts the engine as its
    child, and counting its tree billed the generator for the engine's CPU (the donations benchmark once reported
    1.3-1.5 ms of "generator" CPU per donation, most of it the engine's). The others are counted with their trees.
    """

    def __init__(self, pids: Mapping[str, int | None], own: Sequence[str] = ("generator",)) -> None:
        self._pids = {name: pid for name, pid in pids.items() if pid}
        self._own = frozenset(own)
        self.restart()

    def restart(self) -> None:
        self._start = time.perf_counter()
        self._start_s = self._sample()
        self._machine_start_s = machine_cpu_s()[0]
        self._stall_start_us = cpu_stall_us()

    def _sample(self) -> dict[str, float]:
        return {
            name: process_cpu_s(pid) if name in self._own else process_tree_cpu_s(pid)
            for name, pid in self._pids.items()
        }

    def seconds(self) -> tuple[float, dict[str, float]]:
        """Wall seconds since the start and CPU seconds of each named process (and ``other``) over them."""
        wall = time.perf_counter() - self._start
        end = self._sample()
        used = {name: max(end[name] - self._start_s[name], 0.0) for name in self._pids}
        machine = machine_cpu_s()[0] - self._machine_start_s
        used["other"] = max(machine - sum(used.values()), 0.0)
        return wall, used

    def cores(self) -> dict[str, float]:
        wall, used = self.seconds()
        cores = {name: round(seconds / wall, 2) if wall else 0.0 for name, seconds in used.items()}
        cores["cpu_wait_percent"] = round((cpu_stall_us() - self._stall_start_us) / wall / 1e4, 1) if wall else 0.0
        return cores

    def per_request_us(self, requests: int) -> dict[str, float]:
        """CPU microseconds per request of each named process (``other`` left out: not the benchmark's)."""
        if not requests:
            return {}
        _, used = self.seconds()
        return {name: round(seconds * 1e6 / requests, 1) for name, seconds in used.items() if name != "other"}


def cpu_stall_us() -> float:
    try:
        some = Path("/proc/pressure/cpu").read_text().split("\n", 1)[0]
        return float(some.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        return 0.0


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


class ServerLog:
    """Which statements read which tables by a sequential scan, from the plans ``auto_explain`` writes to the
    embedded server's log (``<data folder>/log``) from the moment this was made.

    ``explaining`` turns it on for every later session of the connection's database (trigger functions' statements
    too); it costs the server a log line per statement, so only diagnostics use it, never a measured run."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.offset = self._size()
        self.end: int | None = None

    def _size(self) -> int:
        return self.path.stat().st_size if self.path is not None and self.path.exists() else 0

    def stop_reading(self) -> None:
        """Plans logged after this (an audit's whole-table reads, say) are not the measured run's."""
        self.end = self._size()

    @classmethod
    async def explaining(cls, connection: Any) -> ServerLog:
        database = await connection.fetchval("SELECT current_database()")
        for setting, value in (
            ("session_preload_libraries", "auto_explain"),
            ("auto_explain.log_min_duration", "0"),
            ("auto_explain.log_nested_statements", "on"),
        ):
            await connection.execute(f"ALTER DATABASE \"{database}\" SET {setting} = '{value}'")
        folder = await connection.fetchval("SELECT current_setting('data_directory')")
        return cls(Path(folder) / "log" if folder else None)

    def sequential_scans(self, tables: set[str]) -> list[str]:
        """One line per distinct statement whose plan holds a ``Seq Scan`` on one of ``tables`` (names unqualified)."""
        if self.path is None or not self.path.exists():
            return ["(no server log to read: plans not available)"]
        with self.path.open("rb") as log:
            log.seek(self.offset)
            text = log.read(-1 if self.end is None else self.end - self.offset).decode(errors="replace")
        found = []
        for plan in re.split(r"\n(?=\S.*LOG:\s+duration:)", text):
            scans = [line for line in re.findall(r"Seq Scan on (\w+)[^\n]*", plan) if line in tables]
            if scans and "pg_stat" not in plan:
                query = re.search(r"Query Text: (.*?)(?:\n\s*Query Parameters|\n\s+\S[^\n]*\(cost=|$)", plan, re.S)
                estimates = re.findall(r"(Seq Scan on \w+[^\n]*?rows=\d+)", plan)
                statement = " ".join((query.group(1) if query else plan).split())[:1500]
                found.append(f"{sorted(set(scans))}: {statement}  [plan: {'; '.join(sorted(set(estimates)))}]")
        return sorted(set(found))


def run_in_temporary_folder(benchmark: Callable[[Path], Coroutine[Any, Any, int]]) -> int:
    """Run ``benchmark`` on uvloop with a folder of its own (its database, logs), deleted afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="surge-benchmark-"))
    try:
        return uvloop.run(benchmark(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def postmaster_pid(data_folder: Path) -> int | None:
    """The PostgreSQL server's process, from its data folder's ``postmaster.pid``."""
    try:
        return int((data_folder / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
