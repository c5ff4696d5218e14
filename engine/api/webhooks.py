"""`POST /v1/webhooks/{processor}`: verify the signature, then process the event once."""

from __future__ import annotations

from aiohttp import web

from adapters.base import WebhookPayloadError, WebhookSignatureError
from engine.api.errors import ApiError, json_response
from engine.api.state import ACCOUNTS, POOL, PROCESSORS
from engine.payments.processor_events import process_event

routes = web.RouteTableDef()


@routes.post("/v1/webhooks/{processor}")
async def receive_webhook(request: web.Request) -> web.Response:
    name = request.match_info["processor"]
    processor = next((p for p, _ in request.app[PROCESSORS] if p.name == name), None)
    if processor is None:
        raise ApiError(404, "resource_missing", f"No such processor: '{name}'", param="processor")
    payload = await request.read()
    try:
        event = processor.parse_webhook(payload, request.headers)
    except WebhookSignatureError as error:
        raise ApiError(400, "signature_invalid", f"Webhook signature verification failed: {error}") from None
    except WebhookPayloadError as error:
        raise ApiError(400, "payload_invalid", f"Webhook payload not understood: {error}") from None
    async with request.app[POOL].acquire() as connection:
        fresh = await process_event(connection, request.app[ACCOUNTS], processor.name, event)
    return json_response({"received": True, "event": event.id, "duplicate": not fresh})
