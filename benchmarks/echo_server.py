"""The framework's ceiling for the donations benchmark: aiohttp on uvloop, one process, parsing the same JSON body
as ``POST /v1/donations`` and answering 201 with a JSON body of about the same size — and doing nothing else.

    python -m benchmarks.echo_server PORT
"""

from __future__ import annotations

import secrets
import sys

import orjson
import uvloop
from aiohttp import web


async def create_donation(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    answer = {"id": "don_" + secrets.token_hex(12), "object": "donation", "status": "succeeded", **body}
    return web.Response(body=orjson.dumps(answer), status=201, content_type="application/json")


async def ready(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ready"}', content_type="application/json")


def main() -> None:
    app = web.Application()
    app.router.add_post("/v1/donations", create_donation)
    app.router.add_get("/readyz", ready)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
