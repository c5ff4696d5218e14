"""A throwaway redis-server on a Unix socket, for the Redis processor budget's tests and its benchmark."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

STARTUP_TIMEOUT_S = 10.0


def redis_server_installed() -> bool:
    return shutil.which("redis-server") is not None


@contextlib.asynccontextmanager
async def redis_server(folder: Path) -> AsyncIterator[Path]:
    """Yields the server's socket path (in ``folder``); the server is stopped on exit."""
    server = shutil.which("redis-server")
    if server is None:
        raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
    socket_path = folder / "redis.sock"
    process = await asyncio.create_subprocess_exec(
        *(server, "--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "777"),
        *("--save", "", "--appendonly", "no"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not socket_path.exists():
            if time.monotonic() > deadline or process.returncode is not None:
                raise TimeoutError(f"redis-server made no socket at {socket_path} within {STARTUP_TIMEOUT_S:g} s")
            await asyncio.sleep(0.02)
        yield socket_path
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()
