"""Campaigns and API keys (admin), readable campaign list (finance)."""

from __future__ import annotations

from aiohttp import web

from engine import chart_of_accounts
from engine.api.errors import ApiError, json_response
from engine.api.models import KeyCreate
from engine.api.requests import authorized, json_body
from engine.api.state import POOL, PROCESSORS
from engine.campaigns import CampaignExistsError, campaign_from_json, create_campaign, list_campaigns
from engine.keys import Role, create_key
from engine.validation import decode

routes = web.RouteTableDef()


@routes.post("/v1/campaigns")
async def post_campaign(request: web.Request) -> web.Response:
    await authorized(request, Role.ADMIN)
    raw = await json_body(request)
    campaign = campaign_from_json(raw)
    async with request.app[POOL].acquire() as connection:
        try:
            await create_campaign(connection, campaign)
        except CampaignExistsError:
            raise ApiError(409, "resource_exists", f"Campaign {campaign.slug} already exists.", param="slug") from None
        for processor, _ in request.app[PROCESSORS]:
            await chart_of_accounts.ensure_processor_accounts(connection, processor.name, campaign.currency)
    return json_response(campaign.as_json(), 201)


@routes.get("/v1/campaigns")
async def get_campaigns(request: web.Request) -> web.Response:
    await authorized(request, Role.FINANCE)
    campaigns = await list_campaigns(request.app[POOL])
    return json_response({"object": "list", "data": [c.as_json() for c in campaigns], "has_more": False})


@routes.post("/v1/keys")
async def post_key(request: web.Request) -> web.Response:
    await authorized(request, Role.ADMIN)
    body = decode(await json_body(request), KeyCreate)
    async with request.app[POOL].acquire() as connection:
        key, secret = await create_key(connection, Role(body.role), body.label)
    return json_response({"object": "api_key", "id": key.id, "role": key.role.value, "secret": secret}, 201)
