"""Starting a Surge of our own for a rehearsal: a fresh embedded PostgreSQL in a temporary folder and
``python -m engine serve`` as a child process, talking to it over loopback HTTP like any client.

Why a child process and not the engine in this process: the generator costs CPU, and in one event loop its
bursts of sends would delay the engine's handlers (and the engine's work would delay sends), so latency would
measure the two tangled together; with a process each they are scheduled by the kernel on the two cores, as a real
engine and its real clients are. The engine is also started exactly as operators start it — same command, same
``SURGE_*`` configuration, graceful SIGTERM at the end — so the rehearsal exercises what will run on the night.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import asyncpg

from engine import database
from engine.bootstrap import bootstrap
from engine.database import embedded_server
from engine.keys import Role, create_key
from loadtest.http_client import ConnectionPool, HttpError

# The processor a rehearsal charges through unless told otherwise: like a busy real one (~250 ms median, long tail,
# 100 charges/s, rare timeouts), with the engine's budget at the same 100/s, and client addresses taken from
# X-Forwarded-For so that the generator's donors and its card-testing bot look like different sources.
REHEARSAL_ENVIRONMENT = {
    "SURGE_SIM_PRESET": "realistic",
    "SURGE_PROCESSOR_RATE_PER_S": "100",
    "SURGE_TRUSTED_PROXY_HOPS": "1",
    "SURGE_LOG_LEVEL": "WARNING",
}


class EngineStartError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def embedded_database() -> Iterator[str]:
    """A fresh embedded PostgreSQL in a temporary folder, deleted on exit; yields its URL."""
    with embedded_database_in_folder() as (url, _):
        yield url


@contextlib.contextmanager
def embedded_database_in_folder() -> Iterator[tuple[str, Path]]:
    """As ``embedded_database``, also yielding the server's data folder (the chaos rehearsal stops and starts it)."""
    home = Path(tempfile.mkdtemp(prefix="surge-loadtest-"))
    try:
        with embedded_server(home / "postgres", delete_on_exit=True) as url:
            yield url, home / "postgres"
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def prepare_database(database_url: str) -> str:
    """Migrate, bootstrap (keys and the demo campaign on an empty database) and return a new form key."""
    connection = await asyncpg.connect(database_url)
    try:
        await database.migrate(connection)
        await bootstrap(connection, create_demo_campaign=True)
    finally:
        await connection.close()
    return await new_key(database_url, Role.FORM, "surge loadtest")


async def new_key(database_url: str, role: Role, label: str) -> str:
    """A new API key of ``role`` in the rehearsal's database; returns its secret."""
    connection = await asyncpg.connect(database_url)
    try:
        _, secret = await create_key(connection, role, label=label)
        return secret
    finally:
        await connection.close()


async def spawn_engine(
    command: Sequence[str],
    log_path: Path,
    *,
    database_url: str,
    host: str,
    port: int,
    environment: Mapping[str, str],
) -> asyncio.subprocess.Process:
    """``python -m <command>`` with this process's environment plus ``environment``, the database and the listening
    address, its output appended to ``log_path``: how every engine process of a rehearsal is started."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_environment = {
        **os.environ,
        **environment,
        "DATABASE_URL": database_url,
        "SURGE_HOST": host,
        "SURGE_PORT": str(port),
    }
    with log_path.open("ab") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            *command,
            env=full_environment,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


class EngineProcess:
    """``python -m engine serve`` on a free loopback port, its output in ``log_path``."""

    def __init__(
        self, database_url: str, log_path: Path, environment: Mapping[str, str], home: Path | None = None
    ) -> None:
        self.port = free_port()
        self.host = "127.0.0.1"
        self.log_path = log_path
        self.environment = {**REHEARSAL_ENVIRONMENT, **environment}
        self._home = home
        self._database_url = database_url
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    async def start(self, timeout_s: float = 60.0) -> None:
        environment = dict(self.environment)
        if self._home is not None:
            environment["SURGE_HOME"] = str(self._home)
        self._process = await spawn_engine(
            ("engine", "serve"),
            self.log_path,
            database_url=self._database_url,
            host=self.host,
            port=self.port,
            environment=environment,
        )
        await self._wait_ready(timeout_s)

    async def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pool = ConnectionPool(self.host, self.port, size_max=1)
        request = f"GET /readyz HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode()
        try:
            while time.monotonic() < deadline:
                if self._process is not None and self._process.returncode is not None:
                    raise EngineStartError(f"the engine exited with {self._process.returncode}; see {self.log_path}")
                with contextlib.suppress(HttpError, TimeoutError):
                    if (await pool.request(request, timeout_s=2.0)).status == 200:
                        return
                await asyncio.sleep(0.1)
        finally:
            pool.close()
        raise EngineStartError(f"the engine did not become ready in {timeout_s:.0f} s; see {self.log_path}")

    async def stop(self, timeout_s: float = 40.0) -> int | None:
        """SIGTERM (graceful: in-flight donations finish), then SIGKILL if it does not exit in time."""
        process = self._process
        if process is None or process.returncode is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.wait(), timeout_s)
        except TimeoutError:
            process.kill()
            return await process.wait()
