"""Run the ``surge`` command line as an operator would, against a test's database."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class CliResult:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


async def run_cli(database_url: str, tmp_path: Path, *arguments: str) -> CliResult:
    """``python -m engine ...`` against the test's database, as an operator would run ``surge``."""
    environment = {**os.environ, "DATABASE_URL": database_url, "SURGE_HOME": str(tmp_path / "cli-home")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine",
        *arguments,
        cwd=ROOT,
        env=environment,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    return CliResult(process.returncode or 0, stdout.decode(), stderr.decode())
