"""`/donate/{campaign}`: the embeddable donation page (engine.donor_page), and its static files."""

from __future__ import annotations

from aiohttp import web

from engine.api.errors import ApiError
from engine.api.state import CAMPAIGNS, PAGE_KEYS, PIPELINE, SETTINGS
from engine.donor_page.assets import ASSETS
from engine.donor_page.render import (
    PageConfig,
    challenge_provider,
    content_security_policy,
    page_values,
    render_page,
)
from engine.settings import Settings

routes = web.RouteTableDef()

ASSET_MAX_AGE_S = 300


def page_config(settings: Settings) -> PageConfig:
    return PageConfig(
        simulated=any(kind == "simulated" for _, kind in settings.processor_specs()),
        challenge_provider=challenge_provider(settings.challenge_verifier, settings.challenge_verify_url),
        challenge_site_key=settings.challenge_site_key,
    )


@routes.get(r"/donate/{campaign:[a-z0-9][a-z0-9-]{0,62}}")
async def donation_page(request: web.Request) -> web.Response:
    slug = request.match_info["campaign"]
    campaign = await request.app[CAMPAIGNS].get(slug)
    if campaign is None:
        raise ApiError(404, "resource_missing", f"No such campaign: '{slug}'", param="campaign")
    config = page_config(request.app[SETTINGS])
    challenge_required = config.challenge_provider is not None and await request.app[
        PIPELINE
    ].campaign_challenges.required(campaign)
    values = page_values(
        campaign,
        request.query,
        form_key=await request.app[PAGE_KEYS].secret(slug),
        config=config,
        challenge_required=challenge_required,
    )
    headers = {
        "Content-Security-Policy": content_security_policy(campaign, values["tokenizer"], config.challenge_provider),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "strict-origin-when-cross-origin",
        # Each render carries a fresh idempotency key: a cached copy would make two donors' gifts one request.
        "Cache-Control": "no-store",
    }
    return web.Response(text=render_page(values), content_type="text/html", charset="utf-8", headers=headers)


@routes.get("/donate/static/{name}")
async def donation_page_asset(request: web.Request) -> web.Response:
    asset = ASSETS.get(request.match_info["name"])
    if asset is None:
        raise ApiError(404, "resource_missing", "No such file.")
    body, content_type = asset
    headers = {"Cache-Control": f"public, max-age={ASSET_MAX_AGE_S}", "X-Content-Type-Options": "nosniff"}
    return web.Response(body=body, content_type=content_type, charset="utf-8", headers=headers)
