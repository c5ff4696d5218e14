"""`/v1/recurring/…`: recurring plans (create from a form or the API; list, pause, resume, cancel for finance),
their installments and attempts, per-campaign recurring settings, notices and the recurring report."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from engine.api import recurring_pages
from engine.api.donations import read_donation_request
from engine.api.errors import ApiError, json_response
from engine.api.requests import (
    RECURRING_NOTICES_LIMIT,
    RECURRING_PLANS_LIMIT,
    authorized,
    json_body,
    limit_param,
    parse_time,
)
from engine.api.state import CAMPAIGNS, POOL, PROCESSORS
from engine.campaigns import Campaign
from engine.keys import Role
from engine.pipeline.donation_request import validate_idempotency_key
from engine.recurring import plans, reports, saved_methods
from engine.recurring.links import LinkKind
from engine.recurring.plans import INSTALLMENTS_MAX, INTERVALS, ChangeOutcome
from engine.recurring.saved_methods import PlanRefused
from engine.recurring.scheduler import RecurringScheduler

RECURRING_SCHEDULER = web.AppKey("recurring_scheduler", RecurringScheduler)
PLAN_FIELDS = ("interval", "installments", "start")

routes = web.RouteTableDef()


async def checked_campaign(request: web.Request, slug: str, currency: str, donor: dict[str, Any]) -> Campaign:
    """The campaign's rules a plan must meet before a card is saved (the pipeline checks the rest per installment)."""
    campaign = await request.app[CAMPAIGNS].get(slug)
    if campaign is None:
        raise ApiError(400, "resource_missing", f"No such campaign: '{slug}'", param="campaign")
    if currency != campaign.currency:
        raise ApiError(400, "currency_mismatch", f"Campaign {slug} accepts {campaign.currency} only.", param="currency")
    if campaign.require_attestation and not donor.get("citizenship_attested"):
        raise ApiError(
            400,
            "attestation_required",
            "The donor must attest (donor.citizenship_attested: true).",
            param="donor.citizenship_attested",
        )
    return campaign


def _plan_terms(raw: dict[str, Any], may_start_later: bool) -> tuple[str, int | None, Any]:
    interval = raw.get("interval", "month")
    if interval not in INTERVALS:
        raise ApiError(400, "parameter_invalid", "interval must be week or month.", param="interval")
    installments = raw.get("installments")
    if installments is not None and (
        not isinstance(installments, int) or isinstance(installments, bool) or not 1 <= installments <= INSTALLMENTS_MAX
    ):
        raise ApiError(
            400,
            "parameter_invalid",
            f"installments must be 1-{INSTALLMENTS_MAX}, or absent for until cancelled.",
            param="installments",
        )
    start = raw.get("start")
    if start is not None:
        if not may_start_later:
            raise ApiError(403, "parameter_not_allowed", "Only finance keys may set start.", param="start")
        start = parse_time(start, "start")
    return interval, installments, start


@routes.post("/v1/recurring/plans")
async def create_plan(request: web.Request) -> web.Response:
    """Save the donor's card at the processor and start a plan; its first installment is charged by the scheduler
    at once (or at ``start``, finance keys only). Header ``Idempotency-Key`` required."""
    key = await authorized(request, Role.FORM, Role.FINANCE)
    idempotency_key = validate_idempotency_key(request.headers.get("Idempotency-Key"))
    pool = request.app[POOL]
    existing = await plans.plan_by_idempotency_key(pool, key.id, idempotency_key)
    if existing is not None:
        return json_response(existing.as_json(), 200)
    raw = await json_body(request)
    interval, installments, start = _plan_terms(raw, key.role is not Role.FORM)
    donation_request = read_donation_request({k: v for k, v in raw.items() if k not in PLAN_FIELDS})
    campaign = await checked_campaign(
        request, donation_request.campaign, donation_request.currency, donation_request.donor
    )
    processor = saved_methods.saving_processor([p for p, _ in request.app[PROCESSORS]])
    if processor is None:
        raise ApiError(400, "recurring_unavailable", "No configured processor can save payment methods.")
    saved = await saved_methods.save_method(pool, processor, donation_request.payment_method, donation_request.donor)
    if isinstance(saved, PlanRefused):
        if saved.problem is saved_methods.PlanProblem.CARD_DECLINED:
            raise ApiError(402, "card_declined", saved.message, type="card_error", decline_code=saved.decline_code)
        raise ApiError(402, "payment_method_not_saved", saved.message, param="payment_method")
    plan = await plans.create_plan(
        pool, campaign, donation_request, saved[0], interval, installments, start, (key.id, idempotency_key)
    )
    scheduler = request.app.get(RECURRING_SCHEDULER)
    if scheduler is not None:
        scheduler.wake()
    manage_url = await recurring_pages.link_url(request, LinkKind.MANAGE_PLAN, "/recurring/manage", {"plan": plan.id})
    return json_response({**plan.as_json(), "manage_url": manage_url}, 201)


@routes.get("/v1/recurring/plans")
async def list_plans(request: web.Request) -> web.Response:
    await authorized(request, Role.FINANCE)
    found = await plans.list_plans(
        request.app[POOL],
        campaign=request.query.get("campaign"),
        status=request.query.get("status"),
        email=request.query.get("email"),
        limit=limit_param(request, RECURRING_PLANS_LIMIT),
        starting_after=request.query.get("starting_after"),
    )
    return json_response({"object": "list", "data": [p.as_json() for p in found]})


async def _plan_or_404(request: web.Request) -> plans.Plan:
    plan = await plans.fetch_plan(request.app[POOL], request.match_info["id"])
    if plan is None:
        raise ApiError(404, "resource_missing", f"No such plan: '{request.match_info['id']}'", param="id")
    return plan


@routes.get("/v1/recurring/plans/{id}")
async def get_plan(request: web.Request) -> web.Response:
    await authorized(request, Role.FINANCE)
    return json_response((await _plan_or_404(request)).as_json())


@routes.get("/v1/recurring/plans/{id}/installments")
async def plan_installments(request: web.Request) -> web.Response:
    """Every period with its attempts and outcomes (finance sees each attempt)."""
    await authorized(request, Role.FINANCE)
    plan = await _plan_or_404(request)
    return json_response({"object": "list", "data": await reports.installments_of(request.app[POOL], plan.id)})


def _changed(outcome: ChangeOutcome, plan_id: str) -> None:
    if outcome is ChangeOutcome.NOT_FOUND:
        raise ApiError(404, "resource_missing", f"No such plan: '{plan_id}'", param="id")
    if outcome is ChangeOutcome.NOT_ALLOWED:
        raise ApiError(409, "plan_state_conflict", "The plan's status does not allow this change.")


@routes.post("/v1/recurring/plans/{id}/cancel")
async def cancel_plan(request: web.Request) -> web.Response:
    await authorized(request, Role.FINANCE)
    plan_id = request.match_info["id"]
    _changed(await plans.cancel_plan(request.app[POOL], plan_id, "cancelled_by_finance"), plan_id)
    return json_response((await _plan_or_404(request)).as_json())


@routes.post("/v1/recurring/plans/{id}/pause")
async def pause_plan(request: web.Request) -> web.Response:
    await authorized(request, Role.FINANCE)
    plan_id = request.match_info["id"]
    _changed(await plans.pause_plan(request.app[POOL], plan_id, paused=True), plan_id)
    return json_response((await _plan_or_404(request)).as_json())


@routes.post("/v1/recurring/plans/{id}/resume")
async def resume_plan(request: web.Request) -> web.Response:
    await authorized(request, Role.FINANCE)
    plan_id = request.match_info["id"]
    _changed(await plans.pause_plan(request.app[POOL], plan_id, paused=False), plan_id)
    return json_response((await _plan_or_404(request)).as_json())


@routes.put("/v1/campaigns/{slug}/recurring")
async def put_campaign_settings(request: web.Request) -> web.Response:
    """``{"on_limit": "continue"|"stop", "quick_donate_confirm_above": 25000}`` (admin)."""
    await authorized(request, Role.ADMIN)
    slug = request.match_info["slug"]
    if await request.app[CAMPAIGNS].get(slug) is None:
        raise ApiError(404, "resource_missing", f"No such campaign: '{slug}'", param="slug")
    raw = await json_body(request)
    on_limit = raw.get("on_limit", "continue")
    above = raw.get("quick_donate_confirm_above", 25_000)
    if on_limit not in ("continue", "stop"):
        raise ApiError(400, "parameter_invalid", "on_limit must be continue or stop.", param="on_limit")
    if not isinstance(above, int) or isinstance(above, bool) or not 0 <= above <= 100_000_000:
        raise ApiError(
            400,
            "parameter_invalid",
            "quick_donate_confirm_above must be 0-100000000 minor units.",
            param="quick_donate_confirm_above",
        )
    await request.app[POOL].execute(
        """INSERT INTO surge.recurring_campaign_settings (campaign, on_limit, quick_donate_confirm_above_minor)
           VALUES ($1, $2, $3) ON CONFLICT (campaign) DO UPDATE
           SET on_limit = EXCLUDED.on_limit,
               quick_donate_confirm_above_minor = EXCLUDED.quick_donate_confirm_above_minor""",
        slug,
        on_limit,
        above,
    )
    return json_response(
        {"object": "recurring_settings", "campaign": slug, "on_limit": on_limit, "quick_donate_confirm_above": above}
    )


@routes.get("/v1/recurring/notices")
async def list_notices(request: web.Request) -> web.Response:
    """What donors and campaigns were told (skipped installments, failed payments, cancelled plans), newest first."""
    await authorized(request, Role.FINANCE)
    data = await reports.notices(
        request.app[POOL], request.query.get("campaign"), limit_param(request, RECURRING_NOTICES_LIMIT)
    )
    return json_response({"object": "list", "data": data})


@routes.get("/v1/reports/recurring")
async def recurring_report(request: web.Request) -> web.Response:
    """Per campaign: active plans, monthly recurring amount, installments succeeded / failed / skipped, churn."""
    await authorized(request, Role.FINANCE)
    return json_response({"object": "list", "data": await reports.by_campaign(request.app[POOL])})
