"""A real headless Chromium for the dashboard tests, driven by Playwright's Python package (async API) — no
downloaded browser: Playwright launches Debian's ``chromium`` package (``executable_path``), installed on demand.

The set-up installs the package where it is missing (``apt-get``, non-interactive, as root, as CI runs) and skips
the test with the reason where it cannot be installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from playwright.async_api import Browser, async_playwright

APT_TIMEOUT_S = 900
LAUNCH_TIMEOUT_MS = 30_000
EXECUTABLES = ("chromium", "chromium-browser")


def find_chromium() -> str | None:
    return next((path for name in EXECUTABLES if (path := shutil.which(name))), None)


def install_chromium() -> tuple[str | None, str]:
    """The Chromium executable, installing Debian's package when missing; (None, why) where that cannot be done."""
    found = find_chromium()
    if found:
        return found, ""
    if shutil.which("apt-get") is None:
        return None, "Chromium is not installed and there is no apt-get to install it with"
    if os.geteuid() != 0:
        return None, "Chromium is not installed and installing it (apt-get install chromium) needs root"
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "chromium"]
    output = ""
    # A fresh machine may have no package lists yet: the first failure refreshes them, then installs again.
    for command in (install, ["apt-get", "update", "-q"], install):
        try:
            result = subprocess.run(
                command,
                env=environment,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=APT_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return None, f"{' '.join(command)} did not finish in {APT_TIMEOUT_S} s"
        output = (result.stdout + result.stderr)[-1500:]
        if command is install and result.returncode == 0 and find_chromium():
            return find_chromium(), ""
    return None, f"apt-get install chromium failed: {output}"


@asynccontextmanager
async def launch_chromium(executable: str) -> AsyncIterator[Browser]:
    """A headless Chromium at ``executable`` under Playwright, closed (with its driver) on the way out."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            timeout=LAUNCH_TIMEOUT_MS,
            # As root (CI containers) Chromium refuses to start sandboxed; /dev/shm is small in containers.
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        try:
            yield browser
        finally:
            await browser.close()
