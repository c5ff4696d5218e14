"""`/metrics` (Prometheus text) and the middleware that measures every request."""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from engine.api.handler import Handler
from engine.api.state import METRICS, PIPELINE

routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    registry = request.app[METRICS]
    registry.queue_depth.labels("durable").set(request.app[PIPELINE].queue_depth)
    return web.Response(body=generate_latest(registry.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    response = await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    metrics = request.app[METRICS]
    metrics.requests.labels(route, str(response.status)).inc()
    metrics.request_latency.labels(route).observe(time.perf_counter() - started)
    return response
