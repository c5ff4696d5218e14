"""A throwaway redis-server on a Unix socket for tests of the Redis processor budget (skips when not installed)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.waiting import wait_until


@contextlib.asynccontextmanager
async def redis_server(folder: Path) -> AsyncIterator[Path]:
    """Yields the server's socket path; the server is stopped on exit."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server); the PostgreSQL store is the default")
    socket_path = folder / "redis.sock"
    process = await asyncio.create_subprocess_exec(
        *(server, "--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "777"),
        *("--save", "", "--appendonly", "no"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_until(socket_path.exists, what="redis-server's socket", timeout=10)
        yield socket_path
    finally:
        process.terminate()
        await process.wait()
