"""A lean HTTP/1.1 client for the generator: a pool of keep-alive connections sending prepared request bytes.

The generator shares the machine's two cores with the engine and PostgreSQL, so every microsecond it spends is
taken from what it measures. aiohttp's client costs about twice the CPU per request of this one (measured on this
machine against the same echo server: ~1.1k versus ~2k requests/s from one busy process), because it builds
headers, cookies, URL objects and a streaming reader per request. Here a request is bytes built before the run,
written to an idle connection; the response is parsed just enough to return its status and body.
It understands responses with ``Content-Length`` (what aiohttp's ``web.Response`` sends) and closes the
connection on ``Connection: close``; anything else is an error. A request that times out closes its connection,
as a browser's would: its answer, if it ever comes, must not be read as the next request's.

Two ways to send: ``ConnectionPool.request`` (a coroutine with its own timeout: for the occasional request), and,
for the generator's hot path, ``take_idle`` + ``_Connection.send_calling`` + ``release``: the answer is handed to a
callback from ``data_received`` in the same loop iteration, with no task, future or timer per request (the caller
keeps its deadlines in order and expires them in bulk; see ``loadtest.generator``).
"""

from __future__ import annotations

import asyncio
import collections
import re
from collections.abc import Callable
from dataclasses import dataclass


class HttpError(Exception):
    """The exchange failed (connection refused or lost, malformed response): the outcome is unknown."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes
    processor_us: int = 0  # the processor's share of the answer's time, from the engine's Server-Timing header


AnswerCallback = Callable[["HttpResponse | HttpError"], None]
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]+)", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:", re.IGNORECASE)
_PROCESSOR_TIME = re.compile(rb"\r\nserver-timing:[^\r]*\bprocessor;dur=([0-9]+(?:\.[0-9]*)?)", re.IGNORECASE)


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[HttpResponse] | None = None
        self._callback: AnswerCallback | None = None
        self.closed = False
        self._close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, error: Exception | None) -> None:
        self.closed = True
        self._deliver(HttpError(f"connection lost: {error or 'closed by the server'}"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._waiter is None and self._callback is None:
            return
        try:
            response = self._parse()
        except HttpError as error:
            self.close()
            self._deliver(error)
            return
        if response is not None:
            if self._close_after:
                self.close()
            self._deliver(response)

    def _deliver(self, answer: HttpResponse | HttpError) -> None:
        waiter, self._waiter = self._waiter, None
        callback, self._callback = self._callback, None
        if callback is not None:
            callback(answer)
        elif waiter is not None and not waiter.done():
            if isinstance(answer, HttpError):
                waiter.set_exception(answer)
            else:
                waiter.set_result(answer)

    def _parse(self) -> HttpResponse | None:
        buffer = self._buffer
        head_end = buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = bytes(buffer[:head_end])
        if not head.startswith(b"HTTP/1.") or len(head) < 12:
            raise HttpError(f"malformed status line: {head[:40]!r}")
        # Three searches of the head instead of splitting it into lines: this runs once per answer.
        if _CHUNKED.search(head):
            raise HttpError("chunked responses are not supported")
        length_match = _CONTENT_LENGTH.search(head)
        if length_match is None:
            raise HttpError("response without Content-Length")
        if _CLOSE.search(head):
            self._close_after = True
        end = head_end + 4 + int(length_match.group(1))
        if len(buffer) < end:
            return None
        body = bytes(buffer[head_end + 4 : end])
        del buffer[:end]
        timing = _PROCESSOR_TIME.search(head)
        return HttpResponse(int(head[9:12]), body, int(float(timing.group(1)) * 1000) if timing else 0)

    def send(self, data: bytes) -> asyncio.Future[HttpResponse]:
        if self.transport is None or self.closed:
            raise HttpError("connection is closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self._close_after = False
        self.transport.write(data)
        return self._waiter

    def send_calling(self, data: bytes, callback: AnswerCallback) -> None:
        """Send ``data``; ``callback`` gets the response or the ``HttpError``, once, unless ``forget`` comes first."""
        if self.transport is None or self.closed:
            raise HttpError("connection is closed")
        self._callback = callback
        self._close_after = False
        self.transport.write(data)

    def forget(self) -> None:
        """The caller gave up (its timeout): close, and call nobody about this exchange."""
        self._callback = None
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class ConnectionPool:
    """At most ``size_max`` connections; a request finding none idle waits its turn (first come, first served)."""

    def __init__(self, host: str, port: int, size_max: int = 512) -> None:
        if size_max < 1:
            raise ValueError("size_max must be at least 1")
        self.host = host
        self.port = port
        self.size_max = size_max
        self._idle: list[_Connection] = []
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[_Connection | None]] = collections.deque()
        self._closing = False

    @property
    def open_connections(self) -> int:
        return self._open

    async def request(self, data: bytes, timeout_s: float) -> HttpResponse:
        """Send ``data`` and return the response; TimeoutError after ``timeout_s`` (waiting for a connection too)."""
        async with asyncio.timeout(timeout_s):
            connection = await self._acquire()
            try:
                response = await connection.send(data)
            except BaseException:
                connection.close()
                self._release(connection)
                raise
        self._release(connection)
        return response

    async def _acquire(self) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
            self._open -= 1
        if self._open < self.size_max:
            self._open += 1
            try:
                _, connection = await asyncio.get_running_loop().create_connection(_Connection, self.host, self.port)
            except BaseException as error:
                self._open -= 1
                self._wake_one()
                if isinstance(error, OSError):
                    raise HttpError(f"cannot connect to {self.host}:{self.port}: {error}") from error
                raise
            return connection
        waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            handed = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and (given := waiter.result()) is not None:
                self._release(given)  # handed over just as the caller gave up: pass it on
            raise
        return handed if handed is not None else await self._acquire()

    def take_idle(self) -> _Connection | None:
        """An idle open connection now, or None (then ``request`` waits for one or opens one)."""
        idle = self._idle
        while idle:
            connection = idle.pop()
            if not connection.closed:
                return connection
            self._open -= 1
        return None

    def release(self, connection: _Connection) -> None:
        """Give back a connection from ``take_idle`` (closed ones free their slot)."""
        self._release(connection)

    def _release(self, connection: _Connection) -> None:
        if connection.closed:
            self._open -= 1
            self._wake_one()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        self._idle.append(connection)

    def _wake_one(self) -> None:
        # A slot freed up: the next waiter opens a connection of its own.
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        self._closing = True
        for connection in self._idle:
            connection.close()
        self._idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.cancel()
