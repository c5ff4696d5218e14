"""Donors' signed links (engine/recurring/links.py) and their pages: Quick Donate (`/quick/{token}`), managing a
plan (`/recurring/manage/{token}`: cancel, change the amount) and the donor profile (`/recurring/profile`: a link by
email, then the saved cards, each deletable). Finance makes Quick Donate and manage links through the API.

Pages are server-rendered HTML with no script (CSP ``default-src 'none'``), never cached, and send no referrer: the
token in the address is the donor's proof. A tampered, malformed or expired link gets a clear page and a 4xx.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import jinja2
from aiohttp import web

from engine.api.errors import ApiError, json_response
from engine.api.requests import authorized, client_ip, json_body
from engine.api.state import CAMPAIGNS, PIPELINE, POOL, PROCESSORS, SETTINGS
from engine.donor_page.render import parse_amount
from engine.keys import Role
from engine.pipeline.donation_request import REFCODE_PATTERN
from engine.receipts.assembly import build_sender
from engine.recurring import plans, saved_methods
from engine.recurring.links import MANAGE_LINK_TTL_S, LinkKind, LinkRefusal, LinkSigner, link_signer
from engine.recurring.quick_donate import QuickOutcome, new_quick_link_fields, quick_donate
from engine.settings import Settings
from ledger.currencies import format_minor

LINK_SIGNER = web.AppKey("link_signer", LinkSigner)
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
REFUSAL_TEXT = {
    LinkRefusal.EXPIRED: ("This link has expired", 410),
    LinkRefusal.TAMPERED: ("This link is not valid", 400),
    LinkRefusal.MALFORMED: ("This link is not valid", 400),
}

_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("engine.donor_page", "templates"),
    autoescape=True,
    undefined=jinja2.ChainableUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,
)

routes = web.RouteTableDef()


def page(title: str, status: int = 200, **values: Any) -> web.Response:
    values.setdefault("methods", None)
    html = _ENVIRONMENT.get_template("recurring.html").render(title=title, lines=values.pop("lines", []), **values)
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)


async def signer(app: web.Application) -> LinkSigner:
    """Made at start-up (engine/app.py); made here for an app assembled without it."""
    found = app.get(LINK_SIGNER)
    return found if found is not None else await link_signer(app[POOL], app[SETTINGS].recurring_link_secret)


def _ttl_s(request: web.Request) -> float:
    return float(request.app[SETTINGS].recurring_link_ttl_hours) * 3600


async def posted_form(request: web.Request) -> dict[str, str]:
    """The posted form's fields; an unreadable body (e.g. multipart without a boundary) is a 400, not a 500."""
    try:
        form = await request.post()
    except ValueError:
        raise ApiError(400, "parameter_invalid", "The form could not be read.") from None
    return {key: str(value) for key, value in form.items() if isinstance(value, str)}


def manage_link(settings: Settings, signer: LinkSigner) -> Callable[[str], str]:
    """The plan → its manage link, for the donor's emails (engine/recurring/notices.py)."""
    base = settings.public_url.rstrip("/")

    def link(plan_id: str) -> str:
        return f"{base}/recurring/manage/{signer.sign(LinkKind.MANAGE_PLAN, {'plan': plan_id}, MANAGE_LINK_TTL_S)}"

    return link


async def link_url(request: web.Request, kind: LinkKind, path: str, fields: dict[str, Any]) -> str:
    ttl_s = MANAGE_LINK_TTL_S if kind is LinkKind.MANAGE_PLAN else _ttl_s(request)
    token = (await signer(request.app)).sign(kind, fields, ttl_s)
    return f"{request.app[SETTINGS].public_url.rstrip('/')}{path}/{token}"


async def verified(request: web.Request, kind: LinkKind) -> dict[str, Any] | web.Response:
    fields = (await signer(request.app)).verify(kind, request.match_info["token"])
    if isinstance(fields, LinkRefusal):
        title, status = REFUSAL_TEXT[fields]
        lines = ["Ask for a new link, or give on the campaign's donation page."]
        return page(title, status, problem=title + ".", lines=lines)
    return fields


# ---- Quick Donate -------------------------------------------------------------------------------------------------


@routes.post("/v1/recurring/quick-links")
async def create_quick_link(request: web.Request) -> web.Response:
    """``{"saved_method", "campaign", "amount", "refcode"?}`` (finance): a signed link for that donor's one-tap gift."""
    await authorized(request, Role.FINANCE)
    raw = await json_body(request)
    amount, campaign_slug, method_id = raw.get("amount"), raw.get("campaign"), raw.get("saved_method")
    refcode = raw.get("refcode")
    if not isinstance(amount, int) or isinstance(amount, bool) or not 1 <= amount <= 100_000_000:
        raise ApiError(400, "parameter_invalid", "amount must be 1-100000000 minor units.", param="amount")
    if refcode is not None and not (isinstance(refcode, str) and re.match(REFCODE_PATTERN, refcode)):
        raise ApiError(400, "parameter_invalid", "refcode: letters, digits, ._- (up to 64).", param="refcode")
    if not isinstance(campaign_slug, str) or await request.app[CAMPAIGNS].get(campaign_slug) is None:
        raise ApiError(400, "resource_missing", "No such campaign.", param="campaign")
    exists = await request.app[POOL].fetchval(
        "SELECT true FROM surge.saved_payment_methods WHERE id = $1 AND deleted_at IS NULL", method_id
    )
    if not exists:
        raise ApiError(400, "resource_missing", "No such saved payment method.", param="saved_method")
    fields = new_quick_link_fields(str(method_id), campaign_slug, amount, refcode)
    url = await link_url(request, LinkKind.QUICK_DONATE, "/quick", fields)
    return json_response({"object": "quick_donate_link", "url": url, "link": fields["link"]}, 201)


async def _quick(request: web.Request, confirmed: bool) -> web.Response:
    fields = await verified(request, LinkKind.QUICK_DONATE)
    if isinstance(fields, web.Response):
        return fields
    campaign = await request.app[CAMPAIGNS].get(str(fields["campaign"]))
    if campaign is None:
        return page("This campaign is closed", 410, problem="This campaign no longer takes gifts.")
    amount = format_minor(int(fields["amount"]), campaign.currency)
    result = await quick_donate(
        request.app[POOL], request.app[PIPELINE], campaign, fields, confirmed=confirmed, client_ip=client_ip(request)
    )
    donate_url = f"/donate/{campaign.slug}?amount={amount}" + (
        f"&refcode={fields['refcode']}" if fields.get("refcode") else ""
    )
    outcome = result.outcome
    if outcome is QuickOutcome.CONFIRM:
        return page(
            f"Give {amount} {campaign.currency} to {campaign.name}",
            lines=["Confirm your gift with your saved card."],
            confirm_action=request.path,
            confirm_label=f"Give {amount} {campaign.currency}",
        )
    if outcome is QuickOutcome.CHARGED:
        return page(
            "Thank you",
            lines=[
                f"Your gift of {amount} {campaign.currency} to {campaign.name} went through.",
                f"Reference: {result.donation.id if result.donation else ''}",
            ],
        )
    if outcome is QuickOutcome.PROCESSING:
        return page("Thank you", 202, lines=[f"Your gift of {amount} {campaign.currency} is being processed."])
    if outcome is QuickOutcome.AUTHENTICATION_REQUIRED:
        return page(
            "Your bank wants to confirm this gift",
            402,
            donate_url=donate_url,
            lines=["Your card needs your confirmation for this payment; give on the donation page."],
        )
    if outcome is QuickOutcome.METHOD_GONE:
        return page("Your saved card was removed", 410, donate_url=donate_url)
    if outcome is QuickOutcome.DECLINED:
        return page("Your card was declined", 402, problem="Your card was declined.", donate_url=donate_url)
    return page("This gift could not be made", 422, problem=f"This gift could not be made ({result.reason}).")


@routes.get("/quick/{token}")
async def follow_quick_link(request: web.Request) -> web.Response:
    return await _quick(request, confirmed=False)


@routes.post("/quick/{token}")
async def confirm_quick_link(request: web.Request) -> web.Response:
    return await _quick(request, confirmed=True)


# ---- managing a plan ----------------------------------------------------------------------------------------------


@routes.get("/v1/recurring/plans/{id}/manage-link")
async def create_manage_link(request: web.Request) -> web.Response:
    """A signed link for the donor to cancel the plan or change its amount (sent with every installment)."""
    await authorized(request, Role.FINANCE)
    plan = await plans.fetch_plan(request.app[POOL], request.match_info["id"])
    if plan is None:
        raise ApiError(404, "resource_missing", "No such plan.", param="id")
    url = await link_url(request, LinkKind.MANAGE_PLAN, "/recurring/manage", {"plan": plan.id})
    return json_response({"object": "manage_link", "url": url})


def _plan_values(request: web.Request, plan: plans.Plan) -> dict[str, Any]:
    token = request.match_info["token"]
    amount = format_minor(plan.amount_minor, plan.currency)
    return {
        "amount": f"{amount} {plan.currency}",
        "amount_value": amount,
        "currency": plan.currency,
        "interval": plan.interval,
        "status": plan.status.replace("_", " "),
        "card": f"{(plan.brand or 'card').title()} ending {plan.last4 or '????'}",
        "open": plan.status in plans.OPEN_PLAN_STATUSES,
        "amount_action": f"/recurring/manage/{token}/amount",
        "cancel_action": f"/recurring/manage/{token}/cancel",
    }


async def _managed_plan(request: web.Request) -> plans.Plan | web.Response:
    fields = await verified(request, LinkKind.MANAGE_PLAN)
    if isinstance(fields, web.Response):
        return fields
    plan = await plans.fetch_plan(request.app[POOL], str(fields["plan"]))
    if plan is None:
        return page("No such recurring gift", 404, problem="This recurring gift does not exist.")
    return plan


@routes.get("/recurring/manage/{token}")
async def manage_plan_page(request: web.Request) -> web.Response:
    plan = await _managed_plan(request)
    if isinstance(plan, web.Response):
        return plan
    return page("Your recurring gift", plan=_plan_values(request, plan))


@routes.post("/recurring/manage/{token}/cancel")
async def manage_cancel(request: web.Request) -> web.Response:
    plan = await _managed_plan(request)
    if isinstance(plan, web.Response):
        return plan
    await plans.cancel_plan(request.app[POOL], plan.id, "cancelled_by_donor")
    plan = await plans.fetch_plan(request.app[POOL], plan.id) or plan
    return page(
        "Your recurring gift is cancelled",
        lines=["No further gifts will be charged."],
        plan=_plan_values(request, plan),
    )


@routes.post("/recurring/manage/{token}/amount")
async def manage_amount(request: web.Request) -> web.Response:
    plan = await _managed_plan(request)
    if isinstance(plan, web.Response):
        return plan
    form = await posted_form(request)
    amount = parse_amount(str(form.get("amount", "")), plan.currency)
    if amount is None:
        return page(
            "Your recurring gift", 400, problem="Enter an amount such as 25 or 25.50.", plan=_plan_values(request, plan)
        )
    outcome = await plans.change_amount(request.app[POOL], plan.id, amount)
    plan = await plans.fetch_plan(request.app[POOL], plan.id) or plan
    if outcome is not plans.ChangeOutcome.CHANGED:
        return page(
            "Your recurring gift", 409, problem="This gift can no longer be changed.", plan=_plan_values(request, plan)
        )
    return page(
        "Your recurring gift", lines=["The new amount applies from the next gift."], plan=_plan_values(request, plan)
    )


# ---- the donor profile: saved cards -------------------------------------------------------------------------------


@routes.post("/recurring/profile")
async def request_profile_link(request: web.Request) -> web.Response:
    """A donor asks for their profile link; it is emailed to that address only, so following it proves the email.
    The answer is the same whether or not the address has a profile (no one learns who gives)."""
    form = await posted_form(request)
    email = str(form.get("email", "")).strip().lower()
    profile_id = await request.app[POOL].fetchval("SELECT id FROM surge.donor_profiles WHERE email = $1", email)
    if profile_id is not None:
        url = await link_url(request, LinkKind.PROFILE, "/recurring/profile", {"profile": profile_id, "email": email})
        settings = request.app[SETTINGS]
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = settings.receipts_from, email, "Your saved cards"
        # 7bit: a quoted-printable body would break the link's long line with soft line breaks.
        message.set_content(f"Follow this link to see and delete your saved cards:\n\n{url}\n", cte="7bit")
        await build_sender(settings).send(message, f"profile_{profile_id}")
    return page("Check your email", lines=["If this address has saved cards, a link to them is on its way."])


async def _profile(request: web.Request) -> dict[str, Any] | web.Response:
    fields = await verified(request, LinkKind.PROFILE)
    if isinstance(fields, web.Response):
        return fields
    await request.app[POOL].execute(
        "UPDATE surge.donor_profiles SET verified_at = coalesce(verified_at, now()) WHERE id = $1", fields["profile"]
    )
    return fields


async def _methods_page(request: web.Request, profile_id: str, **values: Any) -> web.Response:
    token = request.match_info["token"]
    rows = await request.app[POOL].fetch(
        """SELECT id, brand, last4 FROM surge.saved_payment_methods
            WHERE profile_id = $1 AND deleted_at IS NULL ORDER BY created_at""",
        profile_id,
    )
    methods = [
        {
            "card": f"{(r['brand'] or 'card').title()} ending {r['last4'] or '????'}",
            "delete_action": f"/recurring/profile/{token}/methods/{r['id']}/delete",
        }
        for r in rows
    ]
    return page("Your saved cards", methods=methods, **values)


@routes.get("/recurring/profile/{token}")
async def profile_page(request: web.Request) -> web.Response:
    fields = await _profile(request)
    if isinstance(fields, web.Response):
        return fields
    return await _methods_page(request, str(fields["profile"]))


@routes.post("/recurring/profile/{token}/methods/{method}/delete")
async def delete_method(request: web.Request) -> web.Response:
    fields = await _profile(request)
    if isinstance(fields, web.Response):
        return fields
    processors = {p.name: p for p, _ in request.app[PROCESSORS]}
    deleted = await saved_methods.delete_saved_method(
        request.app[POOL], processors, str(fields["profile"]), request.match_info["method"]
    )
    lines = ["The card was deleted; recurring gifts on it are cancelled."] if deleted else ["No such card."]
    return await _methods_page(request, str(fields["profile"]), lines=lines)
