from __future__ import annotations

import asyncio
import os

from aiohttp import web

from engine.api.errors import ApiError, json_response
from engine.api.state import POOL

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "pid": os.getpid()})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(2):
            await request.app[POOL].fetchval("SELECT 1")
    except (OSError, TimeoutError, Exception) as error:
        raise ApiError(503, "database_unavailable", f"database not reachable: {type(error).__name__}") from error
    return json_response({"status": "ready"})
