"""Whole engine processes (`surge serve`) against a real database: SIGKILL mid-flight, several workers racing on one
donor's limit, and a graceful SIGTERM. The exactly-once and never-over-the-limit guarantees must hold across them."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import asyncpg
import pytest

from engine.bootstrap import bootstrap
from engine.keys import Role
from ledger.check import check_ledger
from tests.e2e.conftest import donation

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def engine_process(database_url: str, port: int, *args: str, **environment: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "DATABASE_URL": database_url, "SURGE_PORT": str(port), **environment}
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "serve", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait(timeout=30)


async def wait_ready(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"engine on port {port} did not become ready")


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


async def wait_until_settled(connection: asyncpg.Connection, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        open_count = await connection.fetchval(
            "SELECT count(*) FROM surge.donations WHERE status IN ('queued', 'charging', 'pending')"
        )
        if open_count == 0 or time.monotonic() > deadline:
            return int(open_count)
        await asyncio.sleep(0.25)


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
    with engine_process(database_url, port, **slow) as process:
        await wait_ready(port)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            tasks = {
                key: asyncio.create_task(post(session, port, keys[Role.FORM], key, body))
                for key, body in bodies.items()
            }
            await asyncio.sleep(1.2)  # some answered, some mid-charge
            process.send_signal(signal.SIGKILL)
            for key, task in tasks.items():
                answers[key] = await task
    answered = {k: a for k, a in answers.items() if a is not None}
    assert answered and len(answered) < len(bodies), "the kill should land mid-flight"
    acknowledged = {a[1]["id"]: bodies[k]["amount"] for k, a in answered.items() if a[0] in (201, 202)}

    with engine_process(database_url, port, **slow):
        await wait_ready(port)
        # Clients retry what they never heard back about, with the same keys: each becomes exactly one donation.
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            for key, answer in answers.items():
                if answer is None:
                    retried = await post(session, port, keys[Role.FORM], key, bodies[key])
                    assert retried is not None and retried[0] in (201, 202, 409), retried
        connection = await asyncpg.connect(database_url)
        try:
            assert await wait_until_settled(connection, timeout_s=60) == 0
            assert await connection.fetchval("SELECT count(*) FROM surge.donations") == len(bodies)
            await audit(connection, acknowledged)
        finally:
            await connection.close()


async def test_two_workers_racing_on_one_donor_never_exceed_the_limit(database_url: str) -> None:
    keys = await prepare(database_url)
    port = free_port()
    with engine_process(database_url, port, "--workers", "2", SURGE_PROCESSOR_RATE_PER_S="10000"):
        await wait_ready(port)
        connector = aiohttp.TCPConnector(force_close=True)  # new connections spread across both workers
        async with aiohttp.ClientSession(connector=connector) as session:
            # Both workers must be up and sharing the port before the race (each starts on its own).
            pids: set[int] = set()
            deadline = time.monotonic() + 30
            while len(pids) < 2 and time.monotonic() < deadline:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    pids.add((await response.json())["pid"])
                await asyncio.sleep(0.05)
            assert len(pids) == 2, "both workers should serve"
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
    with engine_process(
        database_url, port, SURGE_SIM_LATENCY_MS_MEDIAN="600", SURGE_SIM_LATENCY_MS_P99="900"
    ) as process:
        await wait_ready(port)
        async with aiohttp.ClientSession() as session:
            tasks = [
                asyncio.create_task(
                    post(session, port, keys[Role.FORM], f"term-{n}", donation(500, first_name=f"T{n}"))
                )
                for n in range(10)
            ]
            await asyncio.sleep(0.3)
            process.send_signal(signal.SIGTERM)
            results = await asyncio.gather(*tasks)
        assert all(r is not None and r[0] == 201 for r in results), results
        assert process.wait(timeout=30) == 0
    connection = await asyncpg.connect(database_url)
    try:
        assert await wait_until_settled(connection, timeout_s=1) == 0
    finally:
        await connection.close()
