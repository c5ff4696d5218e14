"""One load test from start to verdict: target (given, or started here), schedule, send, watch, drain, measure the
time to charge, audit, and the results that the report and the summary are rendered from."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from loadtest.audit import audit_run
from loadtest.audit_money import audit_commands, audit_money_and_events
from loadtest.chaos.schedule import ChaosOptions
from loadtest.chaos.session import ChaosSession
from loadtest.chaos.workers import EngineWorkers
from loadtest.charge_times import time_to_charge
from loadtest.engine_process import EngineProcess, embedded_database_in_folder, prepare_database
from loadtest.generator import ClientPolicy, Generator
from loadtest.http_client import ConnectionPool
from loadtest.monitor import EngineMonitor
from loadtest.profiles import Arrivals, Profile, arrival_times
from loadtest.recorder import Recorder
from loadtest.report import terminal_summary, write_report
from loadtest.traffic import Target, TrafficMix, TrafficPlan

START_DELAY_S = 0.3  # between building the plan and the first due request: lets the loop settle


@dataclass(frozen=True)
class LoadTestConfig:
    profile: Profile
    arrivals: Arrivals = Arrivals.UNIFORM
    seed: int = 1
    mix: TrafficMix = field(default_factory=TrafficMix)
    policy: ClientPolicy = field(default_factory=ClientPolicy)
    url: str | None = None  # a running engine; None: start one here
    form_key: str | None = None
    campaign: str = "demo"
    database_url: str | None = None  # for the audit and time to charge; with no url, the database to start on
    report_folder: Path = Path("loadtest-report")
    drain_timeout_s: float = 300.0
    progress_interval_s: float = 5.0
    engine_environment: dict[str, str] = field(default_factory=dict)  # SURGE_* for an engine started here
    chaos: bool = False  # inject the fault schedule (loadtest/chaos) while the load runs; needs no url
    chaos_options: ChaosOptions | None = None  # None: the defaults (tests raise shares to make faults certain)


Output = Callable[[str], None]


def print_flushed(line: str) -> None:
    print(line, flush=True)  # progress must show as it happens, also when stdout is a pipe or a CI log


async def run_load_test(config: LoadTestConfig, output: Output = print_flushed) -> dict[str, Any]:
    database_url: str | None
    chaos: ChaosSession | None = None
    async with contextlib.AsyncExitStack() as stack:
        if config.url is None:
            data_folder: Path | None = None
            if config.database_url:
                own_database = config.database_url
            else:
                own_database, data_folder = stack.enter_context(embedded_database_in_folder())
            database_url = own_database
            form_key = await prepare_database(own_database)
            engine_environment = dict(config.engine_environment)
            if data_folder is not None:  # its files (receipts as .eml) go with its temporary database, deleted after
                engine_environment.setdefault("SURGE_HOME", str(data_folder.parent))
            engine: EngineProcess | EngineWorkers
            if config.chaos:
                chaos = ChaosSession(
                    config.seed,
                    config.profile.duration_s,
                    own_database,
                    data_folder,
                    config.report_folder,
                    config.chaos_options,
                )
                engine = chaos.engine(config.report_folder, engine_environment)
            else:
                engine = EngineProcess(own_database, config.report_folder / "engine.log", engine_environment)
            output(f"starting Surge on {engine.url} (database {'given' if config.database_url else 'embedded'}) …")
            stack.push_async_callback(engine.stop)
            if chaos is not None:
                stack.push_async_callback(chaos.abort)  # before the engine stops; nothing left to do after finish
            await engine.start()
            target_info: dict[str, Any] = {
                "url": engine.url,
                "started_by_loadtest": True,
                "engine_pid": engine.pid,
                "engine_environment": engine.environment,
            }
            host, port = engine.host, engine.port
        else:
            if config.chaos:
                raise ValueError("--chaos starts its own engine (it kills and restarts it): leave out --url")
            if not config.form_key:
                raise ValueError("--form-key is needed with --url")
            form_key, database_url = config.form_key, config.database_url
            parts = urlsplit(config.url)
            if parts.scheme != "http" or not parts.hostname:
                raise ValueError(f"--url must be http://host:port, got {config.url}")
            host, port = parts.hostname, parts.port or 80
            target_info = {"url": config.url, "started_by_loadtest": False}
        results = await _drive(config, host, port, form_key, database_url, output, chaos)
        results["target"] = target_info
    write_report(results, config.report_folder)
    return results


async def _drive(
    config: LoadTestConfig,
    host: str,
    port: int,
    form_key: str,
    database_url: str | None,
    output: Output,
    chaos: ChaosSession | None = None,
) -> dict[str, Any]:
    profile, run_id = config.profile, secrets.token_hex(4)
    target = Target(host, port, form_key, config.campaign)
    plan = TrafficPlan(config.mix, target, config.seed, run_id).requests(
        arrival_times(profile, config.arrivals, config.seed), profile.duration_s
    )
    if chaos is not None:
        plan = chaos.plan(plan)
        kinds = sorted({fault.kind.value for fault in chaos.faults})
        output(f"chaos (seed {config.seed}): {len(chaos.faults)} faults: {', '.join(kinds)}")
    output(
        f"{profile.name}: {len(plan)} requests over {profile.duration_s:g} s (baseline {profile.rate_per_s:g}/s, "
        f"peak {profile.peak_rate_per_s:g}/s) against {host}:{port}; run {run_id}"
    )
    pool = ConnectionPool(host, port, config.policy.connections_max)
    start_ns = time.perf_counter_ns() + int(START_DELAY_S * 1e9)
    started_epoch_s = time.time() + START_DELAY_S
    recorder = Recorder(start_ns)
    generator = Generator(plan, pool, config.policy, recorder)
    monitor = EngineMonitor(host, port, start_ns)
    stop_monitor = asyncio.Event()
    monitor_task = asyncio.create_task(monitor.run(stop_monitor))
    progress_task = asyncio.create_task(_progress(recorder, generator, monitor, config.progress_interval_s, output))
    if chaos is not None:
        await chaos.start(f"http://{host}:{port}", start_ns, started_epoch_s, lambda: generator.record.acknowledged)
    try:
        await generator.run()
        if chaos is not None:
            await chaos.faults_done()
    finally:
        progress_task.cancel()
        await asyncio.gather(progress_task, return_exceptions=True)
        pool.close()
    run_s = (time.perf_counter_ns() - start_ns) / 1e9
    output(f"sent everything in {run_s:.1f} s; waiting for the queue to drain (at most {config.drain_timeout_s:g} s)")
    connection = await asyncpg.connect(database_url) if database_url else None
    try:
        drain = await _drain(connection, monitor, config.drain_timeout_s, output)
        if chaos is not None:
            output("delivering the webhooks still due …")
            await chaos.finish()
        stop_monitor.set()
        await monitor_task
        monitor.close()
        results = _results(config, run_id, recorder, generator, monitor, drain, run_s, started_epoch_s)
        if connection is None:
            results["audit"] = None
            results["audit_skipped"] = "no database: pass --database-url to audit a running engine"
        else:
            results["time_to_charge"] = await time_to_charge(connection, run_id, started_epoch_s)
            record = generator.record
            audit = await audit_run(connection, record.acknowledged, record.declined)
            for mismatch in record.mismatches:
                audit.problem(f"client: {mismatch}")
            if chaos is not None:
                results["chaos"] = chaos.results()
                money, deliveries = chaos.money_log, chaos.delivery_log
                await audit_money_and_events(
                    audit,
                    connection,
                    refunds_acknowledged=money.refunds_acknowledged if money else {},
                    key_conflicts=money.key_conflicts if money else [],
                    events_acknowledged=deliveries.acknowledged if deliveries else {},
                )
                await audit_commands(audit, chaos.database_url, started_epoch_s, chaos.engine_environment)
            results["audit"] = audit.as_json()
    finally:
        if connection is not None:
            await connection.close()
    return results


async def _progress(
    recorder: Recorder, generator: Generator, monitor: EngineMonitor, interval_s: float, output: Output
) -> None:
    output(
        f"{'time':>6}  {'offered/s':>9}  {'achieved/s':>10}  {'in flight':>9}  {'errors':>6}  "
        f"{'p50 ms':>8}  {'p99 ms':>8}  {'queue':>7}"
    )
    while True:
        await asyncio.sleep(interval_s)
        window = recorder.take_window()
        elapsed = (time.perf_counter_ns() - recorder.start_ns) / 1e9
        depth = monitor.latest_depth
        output(
            f"{elapsed:5.0f}s  {window['offered'] / interval_s:9.0f}  {window['completed'] / interval_s:10.0f}  "
            f"{generator.in_flight:9d}  {window['errors']:6d}  {_ms(window.get('p50')):>8}  "
            f"{_ms(window.get('p99')):>8}  {'-' if depth is None else depth:>7}"
        )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


async def _drain(
    connection: asyncpg.Connection | None, monitor: EngineMonitor, timeout_s: float, output: Output
) -> dict[str, Any]:
    """Wait until no donation is queued, charging or pending (from the database when we have it)."""
    started = time.monotonic()
    last_report = started
    remaining: int | None = None
    while True:
        if connection is not None:
            remaining = await connection.fetchval(
                "SELECT count(*) FROM surge.donations WHERE status IN ('queued', 'charging', 'pending')"
            )
        else:
            remaining = (await monitor.sample()).depth
        waited = time.monotonic() - started
        if remaining == 0 or waited >= timeout_s:
            break
        if time.monotonic() - last_report >= 10:
            output(f"  draining: {remaining} donations still open after {waited:.0f} s")
            last_report = time.monotonic()
        await asyncio.sleep(0.5)
    return {"drained": remaining == 0, "seconds": round(time.monotonic() - started, 1), "remaining": remaining}


def _results(
    config: LoadTestConfig,
    run_id: str,
    recorder: Recorder,
    generator: Generator,
    monitor: EngineMonitor,
    drain: dict[str, Any],
    run_s: float,
    started_epoch_s: float,
) -> dict[str, Any]:
    profile = config.profile
    totals = recorder.totals()
    totals["offered_per_s"] = round(totals["offered"] / profile.duration_s, 1)
    totals["achieved_per_s"] = round(totals["completed"] / max(run_s, 1e-9), 1)
    bot = totals["by_kind"].get("card_testing", {})
    record = generator.record
    return {
        "tool": "surge loadtest",
        "run_id": run_id,
        "seed": config.seed,
        "started_at": datetime.fromtimestamp(started_epoch_s, UTC).isoformat(timespec="seconds"),
        "run_s": round(run_s, 2),
        "profile": {
            "name": profile.name.value,
            "rate_per_s": profile.rate_per_s,
            "peak_rate_per_s": profile.peak_rate_per_s,
            "peak_multiplier": profile.peak_multiplier,
            "duration_s": profile.duration_s,
            "arrivals": config.arrivals.value,
            "phases": [dataclasses.asdict(phase) for phase in profile.phases()],
        },
        "mix": dataclasses.asdict(config.mix),
        "client_policy": dataclasses.asdict(config.policy),
        "totals": totals,
        "latency_ms": recorder.latency.summary_ms(),
        "own_latency_ms": recorder.own_latency.summary_ms(),  # less the processor's share (Server-Timing)
        "accepted_later_latency_ms": recorder.deferred_latency.summary_ms(),  # the 202s
        "timeline": recorder.timeline(profile.duration_s),
        "queue_depth": [dataclasses.asdict(sample) for sample in monitor.samples],
        "drain": drain,
        "time_to_charge": None,
        "card_testing": {
            "sent": sum(bot.values()),
            "declined": bot.get("declined", 0),
            "blocked": bot.get("blocked", 0),
        },
        "client": {
            "acknowledged": len(record.acknowledged),
            "declined": len(record.declined),
            "final": dict(record.final.most_common()),
            "mismatches": record.mismatches[:20],
        },
        "audit": None,
        "chaos": None,
    }


def passed(results: dict[str, Any]) -> bool:
    audit = results.get("audit")
    return audit is None or bool(audit["ok"])


VELOCITY_HINT_SHARE = 0.5  # of the answers: more blocked than this, and the run measured the velocity check


def velocity_hint(results: dict[str, Any]) -> str | None:
    """Why most answers were 429 card_testing_suspected / 428 challenge_required, and how to run instead."""
    totals = results["totals"]
    blocked = totals["outcomes"].get("blocked", 0)
    if not totals["completed"] or blocked <= VELOCITY_HINT_SHARE * totals["completed"]:
        return None
    return (
        f"\nhint: {blocked} of {totals['completed']} answers were 429 card_testing_suspected or 428 "
        "challenge_required. The engine saw every request come from one address (this load generator's), so its "
        "card-testing check weighed all simulated donors' declines as one source's. The load tester sends each "
        "donor's own address in X-Forwarded-For; have the engine trust it: start it with SURGE_TRUSTED_PROXY_HOPS=1 "
        "(one trusted hop: the load generator), e.g. `SURGE_TRUSTED_PROXY_HOPS=1 surge serve`, or leave out --url "
        "and let surge loadtest start an engine configured that way."
    )


def print_summary(results: dict[str, Any], report_folder: Path, output: Output = print) -> None:
    output(terminal_summary(results))
    hint = velocity_hint(results)
    if hint is not None:
        output(hint)
    output(f"\nreport: {(report_folder / 'report.html').resolve()}\nresults: {(report_folder / 'results.json')}")
    sys.stdout.flush()
