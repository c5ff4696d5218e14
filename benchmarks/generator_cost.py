"""What the load generator itself costs per request, against the echo server and against Surge, at the same rate.

    uv run python -m benchmarks.generator_cost [--rate 300] [--seconds 15]

The generator shares the two cores with what it measures, so its own CPU per request must be small and must not
depend on the target: a donation answer (a slower, larger JSON body) should cost the client about what an echo
answer does. Each target gets the same open-model schedule (``TrafficMix.clean()``, fixed seed) at ``--rate``; the
generator's CPU is this process alone (the engine and the echo server are its children and are counted apart, with
PostgreSQL). Results: ``benchmarks/results/generator-cost.json`` (the run's label from ``--label``, so that two
versions of ``loadtest/`` measured back to back land side by side).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import uvloop

from benchmarks.common import RESULTS_FOLDER, CpuClock, machine_details, print_table
from benchmarks.donations import SURGE_ENVIRONMENT, _postmaster_pid, _wait_ready
from loadtest.engine_process import EngineProcess, embedded_database, free_port, prepare_database
from loadtest.generator import ClientPolicy, Generator
from loadtest.http_client import ConnectionPool
from loadtest.profiles import Profile, ProfileName, arrival_times
from loadtest.recorder import Recorder
from loadtest.traffic import Target, TrafficMix, TrafficPlan

SEED = 20_260_602
CONNECTIONS = 256


async def measure(
    name: str,
    host: str,
    port: int,
    form_key: str,
    pids: dict[str, int | None],
    rate: float,
    seconds: float,
    first_donor: int,
) -> dict[str, Any]:
    pool = ConnectionPool(host, port, CONNECTIONS)
    await _wait_ready(pool)
    profile = Profile(ProfileName.STEADY, rate, seconds)
    plan = TrafficPlan(TrafficMix.clean(), Target(host, port, form_key), SEED, f"gencost-{name}", first_donor).requests(
        arrival_times(profile, seed=SEED), profile.duration_s
    )
    recorder = Recorder(time.perf_counter_ns() + 50_000_000)
    generator = Generator(plan, pool, ClientPolicy(timeout_s=10.0, attempts_max=1), recorder)
    cpu = CpuClock({"generator": os.getpid(), **pids})
    await generator.run(finish_timeout_s=30)
    wall, used = cpu.seconds()
    pool.close()
    completed = recorder.completed
    latency = recorder.latency.summary_ms()
    result: dict[str, Any] = {
        "target": name,
        "rate_per_s": rate,
        "requests": len(plan),
        "completed": completed,
        "errors": recorder.errors,
        "statuses": dict(recorder.statuses),
        "latency_ms": latency,
        "wall_s": round(wall, 2),
        "cpu_cores": {key: round(value / wall, 3) for key, value in used.items()},
        "cpu_us_per_request": {key: round(value * 1e6 / max(completed, 1), 1) for key, value in used.items()},
    }
    print(
        f"  {name:<6} {rate:6.0f}/s  {completed} answers  errors {recorder.errors}  "
        f"p99 {latency.get('p99')} ms  CPU µs/request {result['cpu_us_per_request']}",
        flush=True,
    )
    return result


async def main(arguments: argparse.Namespace) -> int:
    runs: list[dict[str, Any]] = []
    with embedded_database() as database_url:
        form_key = await prepare_database(database_url)
        port = free_port()
        echo = await asyncio.create_subprocess_exec(sys.executable, "-m", "benchmarks.echo_server", str(port))
        try:
            for rate in arguments.echo_rates:
                runs.append(
                    await measure(
                        "echo",
                        "127.0.0.1",
                        port,
                        form_key,
                        {"server": echo.pid},
                        rate,
                        arguments.seconds,
                        len(runs) * 1_000_000,
                    )
                )
        finally:
            echo.terminate()
            await echo.wait()
        folder = Path(tempfile.mkdtemp(prefix="surge-gencost-"))
        engine = EngineProcess(database_url, folder / "engine.log", SURGE_ENVIRONMENT)
        await engine.start()
        try:
            pids = {"server": engine.pid, "postgres": _postmaster_pid(database_url)}
            for rate in arguments.rates:
                runs.append(
                    await measure(
                        "surge",
                        engine.host,
                        engine.port,
                        form_key,
                        pids,
                        rate,
                        arguments.seconds,
                        len(runs) * 1_000_000,
                    )
                )
        finally:
            await engine.stop()
    print_table(
        f"generator CPU per request ({arguments.label})",
        [
            (f"{run['target']} at {run['rate_per_s']:g}/s", f"{run['cpu_us_per_request']['generator']:g} µs")
            for run in runs
        ],
    )
    path = RESULTS_FOLDER / "generator-cost.json"
    previous = orjson.loads(path.read_bytes()) if path.exists() else {}
    previous[arguments.label] = {"runs": runs, "seconds": arguments.seconds, "machine": machine_details()}
    path.write_bytes(orjson.dumps(previous, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.generator_cost", description=__doc__)
    parser.add_argument("--rates", type=float, nargs="+", default=[300.0], help="Surge rates (per second)")
    parser.add_argument("--echo-rates", type=float, nargs="+", default=[300.0, 2000.0], help="echo rates")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--label", default="current", help="the key of this run in generator-cost.json")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(uvloop.run(main(_parse(sys.argv[1:]))))
