"""`/metrics` (Prometheus text) and the middleware that measures every request."""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from engine.api.handler import Handler
from engine.api.state import METRICS, PIPELINE
from engine.pipeline.charger import processor_seconds

routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    registry = request.app[METRICS]
    registry.queue_depth.labels("durable").set(request.app[PIPELINE].queue_depth)
    return web.Response(body=generate_latest(registry.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    # Requests on one keep-alive connection share a task, hence its context: each starts from zero.
    token = processor_seconds.set(0.0)
    try:
        response = await handler(request)
        waited_s = processor_seconds.get()
    finally:
        processor_seconds.reset(token)
    if waited_s > 0 and not response.prepared:
        # The processor's share of this answer (W3C Server-Timing): a load test subtracts it to see Surge's own time.
        response.headers["Server-Timing"] = f"processor;dur={waited_s * 1000:.1f}"
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    metrics = request.app[METRICS]
    metrics.requests.labels(route, str(response.status)).inc()
    metrics.request_latency.labels(route).observe(time.perf_counter() - started)
    return response
