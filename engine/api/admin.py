"""Campaigns and API keys (admin), readable campaign list and audit trail (finance)."""

from __future__ import annotations

from aiohttp import web

from engine.administration import issue_key, open_campaign, withdraw_key
from engine.api.errors import ApiError, json_response
from engine.api.models import KeyCreate
from engine.api.requests import AUDIT_EVENTS_LIMIT, actor, authorized, json_body, limit_param
from engine.api.state import POOL, PROCESSORS
from engine.audit import read
from engine.campaigns import CampaignExistsError, campaign_from_json, list_campaigns
from engine.keys import Role, list_keys
from engine.validation import decode

routes = web.RouteTableDef()


@routes.post("/v1/campaigns")
async def post_campaign(request: web.Request) -> web.Response:
    key = await authorized(request, Role.ADMIN)
    campaign = campaign_from_json(await json_body(request))
    processors = [processor.name for processor, _ in request.app[PROCESSORS]]
    async with request.app[POOL].acquire() as connection:
        try:
            await open_campaign(connection, campaign, processors, actor(request, key))
        except CampaignExistsError:
            raise ApiError(409, "resource_exists", f"Campaign {campaign.slug} already exists.", param="slug") from None
    return json_response(campaign.as_json(), 201)


@routes.get("/v1/campaigns")
async def get_campaigns(request: web.Request) -> web.Response:
    await authorized(request, Role.FINANCE)
    campaigns = await list_campaigns(request.app[POOL])
    return json_response({"object": "list", "data": [c.as_json() for c in campaigns], "has_more": False})


@routes.post("/v1/keys")
async def post_key(request: web.Request) -> web.Response:
    admin = await authorized(request, Role.ADMIN)
    body = decode(await json_body(request), KeyCreate)
    async with request.app[POOL].acquire() as connection:
        key, secret = await issue_key(connection, Role(body.role), body.label, actor(request, admin))
    return json_response({"object": "api_key", "id": key.id, "role": key.role.value, "secret": secret}, 201)


@routes.get("/v1/keys")
async def get_keys(request: web.Request) -> web.Response:
    await authorized(request, Role.ADMIN)
    return json_response({"object": "list", "data": await list_keys(request.app[POOL]), "has_more": False})


@routes.delete("/v1/keys/{id}")
async def delete_key(request: web.Request) -> web.Response:
    """Revoke a key: refused by every engine process within the key cache's lifetime, its dashboard sessions at
    once. Revoking a revoked key changes nothing (200 again); an unknown one is 404."""
    admin = await authorized(request, Role.ADMIN)
    key_id = request.match_info["id"]
    async with request.app[POOL].acquire() as connection:
        await withdraw_key(connection, key_id, actor(request, admin))
        keys = [k for k in await list_keys(connection) if k["id"] == key_id]
    if not keys:
        raise ApiError(404, "resource_missing", f"No such key: {key_id}", param="id")
    return json_response(keys[0])


@routes.get("/v1/audit-events")
async def get_audit_events(request: web.Request) -> web.Response:
    """The audit trail, newest first; ``starting_after`` (an event id) continues a page."""
    await authorized(request, Role.FINANCE)
    limit = limit_param(request, AUDIT_EVENTS_LIMIT)
    before = request.query.get("starting_after")
    if before is not None and not (before.isascii() and before.isdigit() and len(before) <= 18):
        raise ApiError(400, "parameter_invalid", "starting_after must be an audit event id.", param="starting_after")
    events = await read(
        request.app[POOL],
        limit=limit,
        before_id=int(before) if before is not None else None,
        action=request.query.get("action"),
        subject=request.query.get("subject"),
    )
    data = [event.as_json() for event in events]
    return json_response({"object": "list", "data": data, "has_more": len(data) == limit})
