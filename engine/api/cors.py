"""CORS for donation forms: browsers may call `/v1/donations` from the origins a campaign allows.

The preflight cannot know the campaign (it has no body), so it admits any origin some campaign allows; the POST
itself is then checked against its campaign's list. ``*`` in a campaign's list allows every origin.
"""

from __future__ import annotations

from aiohttp import web

from engine.api.handler import Handler
from engine.api.state import CAMPAIGNS

_ALLOWED_HEADERS = "Authorization, Content-Type, Idempotency-Key"


async def _origin_known(request: web.Request, origin: str) -> bool:
    campaigns = await request.app[CAMPAIGNS].all()
    return any("*" in c.allowed_origins or origin in c.allowed_origins for c in campaigns)


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    origin = request.headers.get("Origin")
    if origin is None or not request.path.startswith("/v1/donations"):
        return await handler(request)
    if request.method == "OPTIONS":
        if not await _origin_known(request, origin):
            return web.Response(status=403)
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": "GET, POST",
                "Access-Control-Allow-Headers": _ALLOWED_HEADERS,
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            },
        )
    response = await handler(request)
    if await _origin_known(request, origin):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
    return response
