"""Whole engine processes (`surge serve`) against a real database: SIGKILL mid-flight, several workers racing on one
donor's limit, and a graceful SIGTERM. The exactly-once and never-over-the-limit guarantees must hold across them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest

from engine.bootstrap import bootstrap
from engine.keys import Role
from ledger.check import check_ledger
from tests.e2e.conftest import donation
from tests.waiting import wait_for_line, wait_until

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Engine:
    """A running `surge serve`, its pids (one per worker, read from their "listening" log lines) and its log."""

    process: asyncio.subprocess.Process
    worker_pids: set[int]
    log: list[str]

    def send_signal(self, number: int) -> None:
        self.process.send_signal(number)


# A worker process logs its pid; a single-process engine logs with the CLI's format, without one.
LISTENING = r"INFO (?:(\d+) )?\S+: listening on http://"


@asynccontextmanager
async def engine_process(
    database_url: str, port: int, *, workers: int = 1, environment: dict[str, str] | None = None
) -> AsyncIterator[Engine]:
    """Start the engine and return once each of its ``workers`` has logged that it is listening (after its start-up:
    its pool is open and its socket accepts), reading the engine's log for the rest of its life."""
    env = {**os.environ, "DATABASE_URL": database_url, "SURGE_PORT": str(port), **(environment or {})}
    worker_flags = ["--workers", str(workers)] if workers > 1 else []
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine",
        "serve",
        *worker_flags,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    log: list[str] = []
    drain: asyncio.Task[None] | None = None
    try:
        pids: set[int] = set()
        while len(pids) < workers:
            listening = await wait_for_line(
                process.stderr, LISTENING, timeout=60, what="the engine listening", seen=log
            )
            pids.add(int(listening.group(1) or process.pid))
        drain = asyncio.create_task(_keep_reading(process.stderr, log))  # a full pipe would block the engine
        yield Engine(process, pids, log)
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # it died (SIGKILL) but is not reaped yet
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
        await asyncio.wait_for(process.wait(), 30)
        if drain is not None:
            await drain


async def _keep_reading(stream: asyncio.StreamReader, log: list[str]) -> None:
    while line := await stream.readline():
        log.append(line.decode(errors="replace").rstrip("\n"))


async def prepare(database_url: str) -> dict[Role, str]:
    connection = await asyncpg.connect(database_url)
    try:
        return await bootstrap(connection, create_demo_campaign=True)
    finally:
        await connection.close()


async def post(
    session: aiohttp.ClientSession, port: int, key: str, idempotency_key: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any]] | None:
    """None when the connection failed (the engine died): the client does not know the outcome."""
    try:
        async with session.post(
            f"http://127.0.0.1:{port}/v1/donations",
            json=body,
            headers={"Authorization": f"Bearer {key}", "Idempotency-Key": idempotency_key},
        ) as response:
            return response.status, await response.json()
    except (TimeoutError, aiohttp.ClientError):
        return None


async def open_donations(connection: asyncpg.Connection) -> int:
    return int(
        await connection.fetchval(
            "SELECT count(*) FROM surge.donations WHERE status IN ('queued', 'charging', 'pending')"
        )
    )


async def wait_until_settled(connection: asyncpg.Connection, timeout_s: float) -> None:
    async def settled() -> bool:
        return await open_donations(connection) == 0

    await wait_until(
        settled,
        timeout=timeout_s,
        what="every donation settled (none queued, charging or pending)",
    )


async def audit(connection: asyncpg.Connection, acknowledged: dict[str, int]) -> None:
    """Every acknowledged donation is in the ledger exactly once with its amount; no processor charge is missing."""
    entries = {
        row["reference"]: row["amount"]
        for row in await connection.fetch(
            """SELECT e.reference, p.amount FROM ledger.entries e
                 JOIN ledger.postings p ON p.entry_id = e.id
                 JOIN ledger.accounts a ON a.id = p.account_id
                WHERE e.kind = 'transfer' AND a.code = 'contributions:demo'"""
        )
    }
    statuses = dict(await connection.fetch("SELECT id, status FROM surge.donations"))
    for donation_id, amount in acknowledged.items():
        assert statuses.get(donation_id) in ("succeeded", "declined"), (donation_id, statuses.get(donation_id))
        if statuses[donation_id] == "succeeded":
            assert entries.get(donation_id) == -amount, donation_id
    charges = await connection.fetch(
        "SELECT donation_id, count(*) AS n FROM simulator.charges WHERE status = 'succeeded' GROUP BY donation_id"
    )
    for charge in charges:
        assert charge["n"] == 1, f"{charge['donation_id']} charged {charge['n']} times"
        assert charge["donation_id"] in entries, f"{charge['donation_id']} charged but not in the ledger"
    assert len(charges) == len(entries)
    assert await connection.fetchval("SELECT coalesce(sum(held_minor), 0) FROM surge.contribution_aggregates") == 0
    assert (await check_ledger(connection)).ok


async def test_sigkill_mid_flight_loses_nothing_and_charges_nothing_twice(database_url: str) -> None:
    keys = await prepare(database_url)
    port = free_port()
    slow = {
        "SURGE_SIM_LATENCY_MS_MEDIAN": "800",
        "SURGE_SIM_LATENCY_MS_P99": "1500",
        "SURGE_CHARGE_TIMEOUT_MS": "2000",
        "SURGE_PROCESSOR_RATE_PER_S": "1000",
    }
    bodies = {f"crash-{n}": donation(1000 + n, first_name=f"Donor{n}") for n in range(60)}
    answers: dict[str, tuple[int, dict[str, Any]] | None] = {}
    async with (
        engine_process(database_url, port, environment=slow) as engine,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session,
    ):
        tasks = {
            key: asyncio.create_task(post(session, port, keys[Role.FORM], key, body)) for key, body in bodies.items()
        }
        # The kill lands mid-flight: some donations answered, the others still being charged.
        await wait_until(lambda: sum(task.done() for task in tasks.values()) >= 5, what="the first donations answered")
        engine.send_signal(signal.SIGKILL)
        for key, task in tasks.items():
            answers[key] = await task
    answered = {k: a for k, a in answers.items() if a is not None}
    assert answered and len(answered) < len(bodies), "the kill should land mid-flight"
    acknowledged = {a[1]["id"]: bodies[k]["amount"] for k, a in answered.items() if a[0] in (201, 202)}

    async with engine_process(database_url, port, environment=slow):
        # Clients retry what they never heard back about, with the same keys: each becomes exactly one donation.
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            for key, answer in answers.items():
                if answer is None:
                    retried = await post(session, port, keys[Role.FORM], key, bodies[key])
                    assert retried is not None and retried[0] in (201, 202, 409), retried
        connection = await asyncpg.connect(database_url)
        try:
            await wait_until_settled(connection, timeout_s=60)
            assert await connection.fetchval("SELECT count(*) FROM surge.donations") == len(bodies)
            await audit(connection, acknowledged)
        finally:
            await connection.close()


async def test_two_workers_racing_on_one_donor_never_exceed_the_limit(database_url: str) -> None:
    keys = await prepare(database_url)
    port = free_port()
    async with engine_process(
        database_url, port, workers=2, environment={"SURGE_PROCESSOR_RATE_PER_S": "10000"}
    ) as engine:
        # Both workers are up and sharing the port before the race: each logged that it listens.
        assert len(engine.worker_pids) == 2, engine.log
        connector = aiohttp.TCPConnector(force_close=True)  # new connections spread across both workers
        async with aiohttp.ClientSession(connector=connector) as session:
            results = await asyncio.gather(
                *(post(session, port, keys[Role.FORM], f"race-{n}", donation(40_000)) for n in range(40))
            )
        statuses = [r[0] for r in results if r is not None]
        assert statuses.count(201) == 8, statuses
        assert statuses.count(422) == 32
        connection = await asyncpg.connect(database_url)
        try:
            row = await connection.fetchrow("SELECT posted_minor, held_minor FROM surge.contribution_aggregates")
            assert (row["posted_minor"], row["held_minor"]) == (320_000, 0)
            assert (await check_ledger(connection)).ok
        finally:
            await connection.close()


async def test_sigterm_finishes_in_flight_donations_then_exits(database_url: str) -> None:
    keys = await prepare(database_url)
    port = free_port()
    connection = await asyncpg.connect(database_url)
    try:
        async with engine_process(
            database_url, port, environment={"SURGE_SIM_LATENCY_MS_MEDIAN": "600", "SURGE_SIM_LATENCY_MS_P99": "900"}
        ) as engine:
            async with aiohttp.ClientSession() as session:
                tasks = [
                    asyncio.create_task(
                        post(session, port, keys[Role.FORM], f"term-{n}", donation(500, first_name=f"T{n}"))
                    )
                    for n in range(10)
                ]

                # Every donation is accepted (its intent recorded) and none answered yet: all ten are in flight.
                async def all_accepted() -> bool:
                    return await connection.fetchval("SELECT count(*) FROM surge.donations") == len(tasks)

                await wait_until(all_accepted, what="all ten donations recorded by the engine")
                in_flight = sum(not task.done() for task in tasks)
                engine.send_signal(signal.SIGTERM)
                results = await asyncio.gather(*tasks)
            assert in_flight > 0, "SIGTERM should arrive while donations are being charged"
            assert all(r is not None and r[0] == 201 for r in results), results
            assert await asyncio.wait_for(engine.process.wait(), 30) == 0, engine.log
        assert await open_donations(connection) == 0
    finally:
        await connection.close()
