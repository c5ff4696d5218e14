"""A real headless Chromium for the dashboard tests, driven over the Chrome DevTools Protocol with aiohttp's
WebSocket client — no selenium, no downloaded browser: Debian's ``chromium`` package, installed on demand.

The set-up installs the package where it is missing (``apt-get``, non-interactive, as root, as CI runs) and skips
the test with the reason where it cannot be installed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp

APT_TIMEOUT_S = 900
START_TIMEOUT_S = 30.0
CALL_TIMEOUT_S = 30.0
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


class Browser:
    """One headless Chromium process and its first page, spoken to over CDP."""

    def __init__(self, process: asyncio.subprocess.Process, session: aiohttp.ClientSession) -> None:
        self._process = process
        self._session = session
        self._socket: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._loaded = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def launch(cls, executable: str, profile: Path) -> Browser:
        log = _open_log(profile)
        process = await asyncio.create_subprocess_exec(
            executable,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            "--window-size=1280,1500",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        browser = cls(process, aiohttp.ClientSession())
        try:
            await browser._connect(profile)
        except BaseException:
            await browser.close()
            raise
        return browser

    async def _connect(self, profile: Path) -> None:
        async with asyncio.timeout(START_TIMEOUT_S):
            while (port := _devtools_port(profile)) is None:
                if self._process.returncode is not None:
                    raise RuntimeError(f"chromium exited with {self._process.returncode}: {_log_tail(profile)}")
                await asyncio.sleep(0.05)
            while True:
                async with self._session.get(f"http://127.0.0.1:{port}/json/list") as response:
                    pages = [t for t in await response.json() if t.get("type") == "page"]
                if pages:
                    break
                await asyncio.sleep(0.05)
        self._socket = await self._session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        await self.call("Page.enable")
        await self.call("Runtime.enable")

    async def _read(self) -> None:
        if self._socket is None:
            raise RuntimeError("not connected")
        async for message in self._socket:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            data = message.json()
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
            elif data.get("method") == "Page.loadEventFired":
                self._loaded.set()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("the browser closed the DevTools connection"))

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        if self._socket is None:
            raise RuntimeError("not connected")
        call_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        await self._socket.send_json({"id": call_id, "method": method, "params": params})
        reply = await asyncio.wait_for(future, CALL_TIMEOUT_S)
        if "error" in reply:
            raise RuntimeError(f"{method} failed: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def navigate(self, url: str) -> None:
        self._loaded.clear()
        await self.call("Page.navigate", url=url)
        await asyncio.wait_for(self._loaded.wait(), CALL_TIMEOUT_S)

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def submit(self, script: str) -> None:
        """Run ``script`` (which submits a form) and wait for the page it leads to."""
        self._loaded.clear()
        await self.evaluate(script)
        await asyncio.wait_for(self._loaded.wait(), CALL_TIMEOUT_S)

    async def screenshot(self, path: Path) -> bytes:
        result = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        image = base64.b64decode(result["data"])
        _write(path, image)
        return image

    async def close(self) -> None:
        if self._socket is not None:
            await self._socket.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._session.close()
        if self._process.returncode is None:
            self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), 10)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()


# Small file operations, kept out of the coroutines (they take microseconds, but the event loop rule is simple).


def _open_log(profile: Path) -> BinaryIO:
    profile.mkdir(parents=True, exist_ok=True)
    return (profile / "chromium.log").open("wb")


def _devtools_port(profile: Path) -> int | None:
    """Chromium writes the port it chose (``--remote-debugging-port=0``) to this file once it listens."""
    port_file = profile / "DevToolsActivePort"
    text = port_file.read_text() if port_file.exists() else ""
    return int(text.split()[0]) if text.strip() else None


def _log_tail(profile: Path) -> str:
    return (profile / "chromium.log").read_text(errors="replace")[-2000:]


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)
