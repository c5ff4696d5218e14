"""The generator's two paths against a real HTTP server: the callback fast path (an idle connection, deadline in a
queue) and the task path (no idle connection; retries), ending with every request's outcome recorded once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web

from loadtest.generator import ClientPolicy, Generator
from loadtest.http_client import ConnectionPool
from loadtest.recorder import Recorder
from loadtest.traffic import Kind, PlannedRequest


class HangingFirstAttempts:
    """Answers 201 to a key's second attempt; never answers its first (the client must give up and retry)."""

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}
        self.never = asyncio.Event()

    async def donate(self, request: web.Request) -> web.Response:
        key = request.headers["Idempotency-Key"]
        self.attempts[key] = self.attempts.get(key, 0) + 1
        body = orjson.loads(await request.read())
        if self.attempts[key] == 1 and key.startswith("hang"):
            await self.never.wait()
        answer = {"id": f"don_{key}", "amount": body["amount"], "status": "succeeded"}
        return web.Response(body=orjson.dumps(answer), status=201, content_type="application/json")


@pytest.fixture
async def server() -> AsyncIterator[tuple[HangingFirstAttempts, int]]:
    behaviour = HangingFirstAttempts()
    app = web.Application()
    app.router.add_post("/v1/donations", behaviour.donate)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield behaviour, port
    behaviour.never.set()
    await runner.cleanup()


def planned(number: int, key: str, due_s: float, port: int, impatient: bool) -> PlannedRequest:
    body = orjson.dumps({"amount": 1000 + number})
    data = (
        f"POST /v1/donations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nIdempotency-Key: {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    return PlannedRequest(number, due_s, Kind.DONATION, 1000 + number, data, impatient)


async def test_every_request_ends_once_on_either_path_with_timeouts_and_retries(
    server: tuple[HangingFirstAttempts, int],
) -> None:
    behaviour, port = server
    # Two connections for six requests due at once: most find no idle connection and take the task path; the
    # impatient ones hang on their first attempt, time out (deadline queue or pool timeout) and are retried.
    plan = [
        planned(n, f"{'hang' if n % 2 else 'ok'}{n}", 0.01 * (n // 3), port, impatient=bool(n % 2)) for n in range(6)
    ]
    pool = ConnectionPool("127.0.0.1", port, size_max=2)
    recorder = Recorder(time.perf_counter_ns())
    policy = ClientPolicy(timeout_s=5.0, impatient_timeout_s=0.2, retry_delay_s=0.01, attempts_max=3)
    generator = Generator(plan, pool, policy, recorder)
    await generator.run(finish_timeout_s=20)
    pool.close()
    assert generator.in_flight == 0
    assert dict(generator.record.final) == {"accepted": 6}
    assert generator.record.acknowledged == {f"don_{'hang' if n % 2 else 'ok'}{n}": 1000 + n for n in range(6)}
    assert recorder.outcomes["abandoned"] == 3 and recorder.outcomes["accepted"] == 6
    assert all(behaviour.attempts[f"hang{n}"] >= 2 for n in (1, 3, 5))  # the first hung; a retry was answered
