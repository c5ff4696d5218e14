"""`surge loadtest --cluster N`: the scale-out proof. On this machine, as separate hosts:

    load generator ──▶ HAProxy (127.0.0.1) ──front links──▶ node1 … nodeN   (each `surge serve` in its own netns)
                                                             │ back links (the node's only way to the database)
                                                             ▼
                                    PgBouncer (transaction mode) ──▶ PostgreSQL primary ──WAL──▶ replica

The deadline profile goes through the balancer while one node is SIGKILLed and started again, another loses its
database link for a while (its ``back`` veth set down: a partition) and a third is restarted gracefully (SIGTERM),
as a rolling deploy does. Afterwards the run's audit (every acknowledged
donation booked once with its amount, nothing charged twice, no donor over the limit, receipts, ledger check), the
operators' commands (``surge reconcile`` with zero exceptions, ``surge ledger check``), the processor's budget
(charges per second in the simulated processor's own record never above the shared bucket's bound) and a report
served from the replica through the balancer. Everything started is stopped, and every namespace deleted, on the
way out — also when something fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from engine.keys import Role, create_key
from engine.pipeline.budget import per_second_bound
from loadtest.audit import AuditReport
from loadtest.audit_money import audit_commands
from loadtest.cluster_services import (
    Host,
    PgBouncerDatabase,
    ServicesUnavailableError,
    haproxy,
    hosts,
    install_services,
    pgbouncer,
    primary_and_replica,
    process_cpu_s,
    stop_process,
)
from loadtest.engine_process import free_port, prepare_database
from loadtest.generator import ClientPolicy
from loadtest.profiles import Profile
from loadtest.report import write_report
from loadtest.run import LoadTestConfig, Output, print_flushed, run_load_test

NODE_PORT = 8000
# The processor's record is written after its simulated latency, so a charge started in one second can land in the
# next: the stated tolerance adds a tenth of the rate to the budget's own per-second bound.
RECORD_JITTER_SHARE = 0.1


def budget_bound_per_s(rate_per_s: float, nodes: int) -> int:
    return per_second_bound(rate_per_s, nodes) + math.ceil(RECORD_JITTER_SHARE * rate_per_s)


REPLICA_LAG_HEADER = "Surge-Replica-Lag-Ms"


@dataclass(frozen=True)
class ClusterConfig:
    nodes: int = 3
    # A short deadline night: 12/s rising to 60/s, 60 s; the processor's budget (30/s) is below the peak, so the
    # durable queue fills and the shared bucket is what holds the processor's rate on every node.
    profile: Profile = field(default_factory=lambda: Profile.named("deadline", 12.0, 60.0, 5.0))
    seed: int = 1
    processor_rate_per_s: float = 30.0
    kill_at_s: float = 12.0  # node 2 SIGKILLed …
    restart_after_s: float = 8.0  # … and started again this much later
    partition_at_s: float = 30.0  # node 3 (node 1 with fewer nodes) loses its database link …
    partition_s: float = 8.0  # … for this long
    rolling_at_s: float = 45.0  # node 1 restarted gracefully (SIGTERM, then started again), as a deploy does
    faults: bool = True  # False: the same cluster and load without faults (for measuring cost per donation)
    report_folder: Path = Path("loadtest-report")
    drain_timeout_s: float = 120.0


class NodeEngine:
    """`surge serve` inside a host's namespace, listening on its front address."""

    def __init__(self, host: Host, environment: dict[str, str], log_path: Path) -> None:
        self.host = host
        self.environment = environment
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self.cpu_s = 0.0  # of its earlier processes (killed or stopped); the running one's is added by total_cpu_s

    def total_cpu_s(self) -> float:
        running = self.process is not None and self.process.returncode is None
        return self.cpu_s + (process_cpu_s(self.process.pid) if running and self.process else 0.0)

    def _keep_cpu(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.cpu_s += process_cpu_s(self.process.pid)

    @property
    def url(self) -> str:
        return f"http://{self.host.front_address}:{NODE_PORT}"

    async def start(self, timeout_s: float = 60.0) -> None:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.host.command(sys.executable, "-m", "engine", "serve"),
                env={**os.environ, **self.environment},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    raise RuntimeError(f"{self.host.name}: the engine exited; see {self.log_path}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(f"{self.url}/readyz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.host.name}: not ready in {timeout_s:g} s; see {self.log_path}")

    def kill(self) -> None:
        self._keep_cpu()
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)

    async def stop(self, timeout_s: float = 20.0) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        self._keep_cpu()  # up to now: the shutdown's own few ms are not counted
        await stop_process(process, timeout_s)


@dataclass
class FaultLog:
    started_s: float = field(default_factory=time.monotonic)
    events: list[dict[str, Any]] = field(default_factory=list)

    def note(self, what: str, output: Output) -> None:
        at_s = round(time.monotonic() - self.started_s, 1)
        self.events.append({"at_s": at_s, "event": what})
        output(f"  [cluster {at_s:5.1f}s] {what}")


async def _faults(config: ClusterConfig, nodes: list[NodeEngine], log: FaultLog, output: Output) -> None:
    """Kill one node and start it again; cut another's database link and restore it; restart the first gracefully."""
    killed = nodes[1 % len(nodes)]
    cut = nodes[2 % len(nodes)] if len(nodes) > 2 else nodes[0]

    async def kill_and_restart() -> None:
        await asyncio.sleep(config.kill_at_s)
        killed.kill()
        log.note(f"SIGKILL {killed.host.name}", output)
        await asyncio.sleep(config.restart_after_s)
        await killed.start()
        log.note(f"{killed.host.name} started again and ready", output)

    async def partition() -> None:
        await asyncio.sleep(config.partition_at_s)
        cut.host.set_database_link(up=False)
        log.note(f"{cut.host.name}: database link down (partition)", output)
        await asyncio.sleep(config.partition_s)
        cut.host.set_database_link(up=True)
        log.note(f"{cut.host.name}: database link up", output)

    async def graceful_restart() -> None:
        await asyncio.sleep(config.rolling_at_s)
        restarted = nodes[0]
        log.note(f"SIGTERM {restarted.host.name} (graceful restart)", output)
        await restarted.stop()
        await restarted.start()
        log.note(f"{restarted.host.name} restarted and ready", output)

    await asyncio.gather(kill_and_restart(), partition(), graceful_restart())


async def charges_per_second(connection: asyncpg.Connection) -> list[int]:
    """The simulated processor's own record: charges it created in each calendar second (its server's clock)."""
    rows = await connection.fetch(
        "SELECT date_trunc('second', created_at) AS second, count(*) AS charges FROM simulator.charges "
        "GROUP BY 1 ORDER BY 1"
    )
    return [int(row["charges"]) for row in rows]


async def _report_from_replica(balancer_url: str, finance_key: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {finance_key}"}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(f"{balancer_url}/v1/reports/trial-balance", headers=headers) as response,
    ):
        await response.read()
        return {"status": response.status, "replica_lag_ms": response.headers.get(REPLICA_LAG_HEADER)}


def node_environment(host: Host, pgbouncer_port: int, direct_url: str, home: Path, rate_per_s: float) -> dict[str, str]:
    via_pgbouncer = f"postgresql://postgres@{host.back_gateway}:{pgbouncer_port}"
    return {
        "DATABASE_URL": f"{via_pgbouncer}/surge",
        "SURGE_DATABASE_PGBOUNCER": "true",
        "SURGE_DIRECT_DATABASE_URL": direct_url,  # migrations at start-up (a Unix socket: no network link needed)
        "SURGE_REPLICA_URL": f"{via_pgbouncer}/surge_replica",
        "SURGE_PROCESSOR_BUDGET": "shared",
        "SURGE_PROCESSOR_RATE_PER_S": f"{rate_per_s:g}",
        "SURGE_HOST": "0.0.0.0",
        "SURGE_PORT": str(NODE_PORT),
        "SURGE_HOME": str(home),
        "SURGE_POOL_SIZE_MAX": "10",
        "SURGE_TRUSTED_PROXY_HOPS": "1",  # the generator's X-Forwarded-For (HAProxy here adds none)
        "SURGE_LOG_LEVEL": "WARNING",
        # A busy processor's long tail, shortened so that its record (written after the latency) shows when it was
        # called to within a fraction of a second; no rate cap of its own: the engines' shared budget is measured.
        "SURGE_SIM_PRESET": "realistic",
        "SURGE_SIM_LATENCY_MS_MEDIAN": "60",
        "SURGE_SIM_LATENCY_MS_P99": "400",
        "SURGE_SIM_CHARGES_PER_S_MAX": "100000",
    }


@contextlib.asynccontextmanager
async def cluster(config: ClusterConfig, folder: Path, output: Output) -> AsyncIterator[dict[str, Any]]:
    """Everything up: yields what the run needs (balancer URL, keys, database, nodes); all stopped on exit."""
    install_services()
    with primary_and_replica(folder / "postgres") as (primary, replica), hosts(config.nodes) as machines:
        assert replica is not None
        direct_url = primary.url("surge")
        form_key = await prepare_database(direct_url)
        connection = await asyncpg.connect(direct_url)
        try:
            _, finance_key = await create_key(connection, Role.FINANCE, label="surge loadtest --cluster")
        finally:
            await connection.close()
        port = free_port()
        databases = [PgBouncerDatabase("surge", primary), PgBouncerDatabase("surge_replica", replica)]
        addresses = ["127.0.0.1", *(machine.back_gateway for machine in machines)]
        async with pgbouncer(folder / "pgbouncer", databases, port, ",".join(addresses)):
            nodes = [
                NodeEngine(
                    machine,
                    node_environment(machine, port, direct_url, folder / machine.name, config.processor_rate_per_s),
                    config.report_folder / f"{machine.name}.log",
                )
                for machine in machines
            ]
            try:
                output(f"starting {len(nodes)} engine nodes in their namespaces …")
                await asyncio.gather(*(node.start() for node in nodes))
                servers = [(f"node{m.index}", m.front_address, NODE_PORT) for m in machines]
                async with haproxy(folder / "haproxy", free_port(), servers) as balancer_url:
                    yield {
                        "primary": primary,
                        "balancer_url": balancer_url,
                        "form_key": form_key,
                        "finance_key": finance_key,
                        "direct_url": direct_url,
                        "nodes": nodes,
                    }
            finally:
                await asyncio.gather(*(node.stop() for node in nodes), return_exceptions=True)


async def run_cluster(config: ClusterConfig, output: Output = print_flushed) -> dict[str, Any]:
    config.report_folder.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="surge-cluster-"))
    try:
        async with cluster(config, folder, output) as parts:
            log = FaultLog()
            before = await _usage(parts)
            schedule = _faults(config, parts["nodes"], log, output) if config.faults else asyncio.sleep(0)
            faults = asyncio.create_task(schedule)
            try:
                results = await run_load_test(
                    LoadTestConfig(
                        profile=config.profile,
                        seed=config.seed,
                        # Forms retry (same Idempotency-Key) through a node's death and a partition, backing off.
                        policy=ClientPolicy(attempts_max=8, retry_backoff=2.0),
                        url=parts["balancer_url"],
                        form_key=parts["form_key"],
                        database_url=parts["direct_url"],
                        report_folder=config.report_folder,
                        drain_timeout_s=config.drain_timeout_s,
                    ),
                    output,
                )
            finally:
                if not faults.done():
                    await faults  # the schedule finishes inside the run; a short run still restores every node
            usage = _usage_between(before, await _usage(parts), results)
            results["cluster"] = await _cluster_checks(config, parts, results, log)
            results["cluster"]["usage"] = usage
            write_report(results, config.report_folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return results


async def _usage(parts: dict[str, Any]) -> dict[str, float]:
    """CPU seconds of the engines and of the primary, and the primary's commits, so far."""
    connection = await asyncpg.connect(parts["direct_url"])
    try:
        commits = await connection.fetchval("SELECT xact_commit FROM pg_stat_database WHERE datname = 'surge'")
    finally:
        await connection.close()
    return {
        "engine_cpu_s": sum(node.total_cpu_s() for node in parts["nodes"]),
        "primary_cpu_s": parts["primary"].cpu_s(),
        "primary_commits": float(commits),
    }


def _usage_between(before: dict[str, float], after: dict[str, float], results: dict[str, Any]) -> dict[str, Any]:
    """What the run cost per acknowledged donation, measured (the load, its drain and the faults included; the
    simulated processor's own writes land on the primary too)."""
    donations = max(1, results["client"]["acknowledged"])
    seconds = results["run_s"] + results["drain"]["seconds"]
    spent = {key: after[key] - before[key] for key in before}
    return {
        "donations_acknowledged": donations,
        "seconds": round(seconds, 1),
        "engine_cpu_ms_per_donation": round(spent["engine_cpu_s"] * 1000 / donations, 2),
        "primary_cpu_ms_per_donation": round(spent["primary_cpu_s"] * 1000 / donations, 2),
        "primary_commits_per_donation": round(spent["primary_commits"] / donations, 2),
        "primary_commits_per_s": round(spent["primary_commits"] / seconds, 1),
    }


async def _cluster_checks(
    config: ClusterConfig, parts: dict[str, Any], results: dict[str, Any], log: FaultLog
) -> dict[str, Any]:
    report = AuditReport()
    # Reconcile the whole run (the database is this run's alone): from well before it started.
    await audit_commands(report, parts["direct_url"], time.time() - results["run_s"] - 600)
    connection = await asyncpg.connect(parts["direct_url"])
    try:
        per_second = await charges_per_second(connection)
    finally:
        await connection.close()
    bound = budget_bound_per_s(config.processor_rate_per_s, config.nodes)
    over = [count for count in per_second if count > bound]
    if over:
        report.problem(f"processor budget: {len(over)} seconds above {bound} charges (max {max(over)})")
    replica_read = await _report_from_replica(parts["balancer_url"], parts["finance_key"])
    lag = replica_read["replica_lag_ms"]
    if replica_read["status"] != 200 or lag is None or not lag.isdigit():
        report.problem(f"reports: not served from the replica through the balancer ({replica_read})")
    audit = results.get("audit") or {"ok": True, "problem_count": 0, "problems": [], "checked": {}}
    audit["problem_count"] += report.problem_count
    audit["problems"].extend(report.problems)
    audit["checked"].update(report.checked)
    audit["ok"] = audit["problem_count"] == 0
    results["audit"] = audit
    return {
        "nodes": config.nodes,
        "processor_rate_per_s": config.processor_rate_per_s,
        "budget_bound_per_s": bound,
        "charges_per_second_max": max(per_second, default=0),
        "charges_per_second": per_second,
        "report_from_replica": replica_read,
        "faults": log.events,
    }


def cluster_summary(results: dict[str, Any]) -> str:
    part = results["cluster"]
    return (
        f"cluster: {part['nodes']} nodes; processor budget {part['processor_rate_per_s']:g}/s shared, "
        f"busiest second {part['charges_per_second_max']} charges (bound {part['budget_bound_per_s']}); "
        f"report from the replica: {part['report_from_replica']}; cost: {part.get('usage')}; faults: "
        + "; ".join(f"{event['at_s']}s {event['event']}" for event in part["faults"])
    )


def run_cluster_command(nodes: int, profile: Profile, seed: int, report_folder: Path, summary: Callable) -> int:
    """For the CLI: run, print the summary and the cluster's lines, exit 1 when the audit failed."""
    import uvloop

    from loadtest.run import passed

    config = ClusterConfig(nodes=nodes, profile=profile, seed=seed, report_folder=report_folder)
    try:
        results = uvloop.run(run_cluster(config))
    except ServicesUnavailableError as error:
        print(f"surge loadtest --cluster: {error}", flush=True)
        return 2
    summary(results, report_folder)
    print(cluster_summary(results), flush=True)
    return 0 if passed(results) else 1
