"""`/v1/donations`: create (form keys), read, list and refund."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import msgspec
from aiohttp import web

from engine.api.errors import (
    ApiError,
    api_error,
    donation_status,
    error_response,
    json_response,
    payment_error,
    refund_status,
)
from engine.api.models import DonationCreate, RefundCreate
from engine.api.requests import DONATIONS_LIMIT, actor, authorized, client_ip, json_body, limit_param
from engine.api.state import ACCOUNTS, CAMPAIGNS, PIPELINE, POOL, PROCESSORS, SETTINGS
from engine.campaigns import Campaign
from engine.keys import Role
from engine.payments.refund_requests import request_refund
from engine.pipeline.donation_request import (
    DonationRequest,
    check_against_campaign,
    new_donation_request,
    request_fingerprint,
    validate_idempotency_key,
)
from engine.pipeline.donations import DONATION_COLUMNS, Donation, fetch_donation
from engine.pipeline.outcomes import Refusal
from engine.validation import decode

routes = web.RouteTableDef()


def read_donation_request(raw: dict[str, Any]) -> DonationRequest:
    """Validate a donation body: its shape by the model, the rest by the domain."""
    body = decode(raw, DonationCreate)
    # The challenge token is proof for this attempt, not part of the donation: a retry with a fresh token is the
    # same request.
    identity = {name: value for name, value in raw.items() if name != "challenge"}
    return new_donation_request(
        amount_minor=body.amount,
        currency=body.currency,
        campaign=body.campaign,
        donor=msgspec.structs.asdict(body.donor),
        payment_method=body.payment_method,
        metadata=body.metadata,
        fingerprint=request_fingerprint(identity),
        refcode=body.refcode,
    )


@routes.post("/v1/donations")
async def create_donation(request: web.Request) -> web.Response:
    key = await authorized(request, Role.FORM)
    idempotency_key = validate_idempotency_key(request.headers.get("Idempotency-Key"))
    raw = await json_body(request)
    donation_request = read_donation_request(raw)
    challenge: str | None = raw.get("challenge")  # a string when present: the model checked it
    campaign = await request.app[CAMPAIGNS].get(donation_request.campaign)
    if campaign is not None:
        _check_origin(request, campaign)
    refusal = check_against_campaign(donation_request, campaign)
    if refusal is not None:
        return error_response(api_error(refusal))
    if campaign is None:  # check_against_campaign refuses a missing campaign
        raise TypeError("no campaign past check_against_campaign")
    outcome = await request.app[PIPELINE].submit(
        key, idempotency_key, donation_request, campaign, client_ip(request), challenge
    )
    if isinstance(outcome, Refusal):
        return error_response(api_error(outcome))
    error = payment_error(outcome)
    if error is not None:
        return error_response(error)
    return json_response(outcome.as_json(), donation_status(outcome))


def _check_origin(request: web.Request, campaign: Campaign) -> None:
    """A browser's Origin must be one the campaign allows: an HTTP rule, so it stays here."""
    origin = request.headers.get("Origin")
    # The donation page (/donate/{campaign}) is served by Surge itself: its own origin is always allowed.
    same_origin = origin is not None and urlsplit(origin).netloc == request.host
    if (
        origin is not None
        and not same_origin
        and "*" not in campaign.allowed_origins
        and origin not in campaign.allowed_origins
    ):
        raise ApiError(403, "origin_not_allowed", f"Origin {origin} may not post donations to this campaign.")


async def _visible_donation(request: web.Request) -> Donation:
    key = await authorized(request, Role.FORM, Role.FINANCE)
    donation_id = request.match_info["id"]
    donation = await fetch_donation(request.app[POOL], donation_id)
    # A form key sees only the donations it created; to it, the others do not exist.
    if donation is None or (key.role is Role.FORM and donation.api_key_id != key.id):
        raise ApiError(404, "resource_missing", f"No such donation: '{donation_id}'", param="id")
    return donation


@routes.get("/v1/donations/{id}")
async def get_donation(request: web.Request) -> web.Response:
    return json_response((await _visible_donation(request)).as_json())


@routes.get("/v1/donations")
async def list_donations(request: web.Request) -> web.Response:
    await authorized(request, Role.FINANCE)
    limit = limit_param(request, DONATIONS_LIMIT)
    campaign = request.query.get("campaign")
    starting_after = request.query.get("starting_after")
    # needs_review=true: the donations the processor never decided, flagged for review (engine/pipeline/review.py)
    needs_review = request.query.get("needs_review", "false")
    if needs_review not in ("true", "false"):
        raise ApiError(400, "parameter_invalid", "needs_review must be true or false.", param="needs_review")
    rows = await request.app[POOL].fetch(
        f"""SELECT {DONATION_COLUMNS} FROM surge.donations
             WHERE ($1::text IS NULL OR campaign = $1)
               AND ($2::text IS NULL OR (created_at, id) < (SELECT created_at, id FROM surge.donations WHERE id = $2))
               AND (NOT $4 OR (needs_review_at IS NOT NULL AND status IN ('queued', 'charging', 'pending')))
             ORDER BY created_at DESC, id DESC LIMIT $3""",
        campaign,
        starting_after,
        limit,
        needs_review == "true",
    )
    data = [Donation.from_row(row).as_json() for row in rows]
    return json_response({"object": "list", "data": data, "has_more": len(data) == limit})


@routes.post("/v1/donations/{id}/refunds")
async def refund_donation(request: web.Request) -> web.Response:
    key = await authorized(request, Role.FINANCE)
    idempotency_key = validate_idempotency_key(request.headers.get("Idempotency-Key"))
    amount = decode(await json_body(request, allow_empty=True), RefundCreate).amount
    refund = await request_refund(
        request.app[POOL],
        request.app[ACCOUNTS],
        [processor for processor, _ in request.app[PROCESSORS]],
        api_key_id=key.id,
        idempotency_key=idempotency_key,
        donation_id=request.match_info["id"],
        amount_minor=amount,
        timeout_s=request.app[SETTINGS].charge_timeout_ms / 1000,
        actor=actor(request, key),
    )
    return json_response(refund.as_json(), refund_status(refund))
