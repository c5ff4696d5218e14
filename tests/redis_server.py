"""A throwaway redis-server for tests of the Redis processor budget (skips when not installed)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from toolkit import redis_server as server


@contextlib.asynccontextmanager
async def redis_server(folder: Path) -> AsyncIterator[Path]:
    """Yields the server's socket path; the server is stopped on exit."""
    if not server.redis_server_installed():
        pytest.skip("redis-server is not installed (apt-get install redis-server); the PostgreSQL store is the default")
    async with server.redis_server(folder) as socket_path:
        yield socket_path
