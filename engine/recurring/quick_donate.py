"""Quick Donate: a signed link carrying an amount (and refcode) charges the donor's saved method off-session.

The gift is a donation through the pipeline like any other, under the internal recurring key with the idempotency
key ``quick:<link id>`` (a random id signed into the link): following a link twice, or from two devices at once,
gives one gift. Above the campaign's ``quick_donate_confirm_above`` amount the donor confirms on the page first;
when the processor asks for authentication (no donor is present off-session) the donor is sent to the donation page,
where the card can be authenticated.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import asyncpg

from adapters.base import AUTHENTICATION_REQUIRED, off_session_token
from engine.campaigns import Campaign
from engine.pipeline.charging import Pipeline
from engine.pipeline.donation_request import DonationRequest, donor_key, request_fingerprint
from engine.pipeline.donations import DONATION_COLUMNS, Donation
from engine.pipeline.outcomes import Refusal, RefusalReason
from engine.recurring.plans import ensure_recurring_key
from engine.recurring.scheduler import RECURRING_KEY

DEFAULT_CONFIRM_ABOVE_MINOR = 25_000


class QuickOutcome(StrEnum):
    CHARGED = "charged"
    PROCESSING = "processing"  # accepted; the processor's answer comes later
    CONFIRM = "confirm"  # above the campaign's amount: the donor confirms on the page
    AUTHENTICATION_REQUIRED = "authentication_required"  # give on the donation page instead
    DECLINED = "declined"
    REFUSED = "refused"  # intake refused it (e.g. the election limit); ``reason`` says why
    METHOD_GONE = "method_gone"  # the saved method was deleted


@dataclass(frozen=True, slots=True)
class QuickResult:
    outcome: QuickOutcome
    donation: Donation | None = None
    reason: str | None = None


def new_quick_link_fields(
    saved_method_id: str, campaign: str, amount_minor: int, refcode: str | None
) -> dict[str, Any]:
    return {
        "link": secrets.token_hex(12),
        "method": saved_method_id,
        "campaign": campaign,
        "amount": amount_minor,
        "refcode": refcode,
    }


async def confirm_above_minor(connection: asyncpg.Connection | asyncpg.Pool, campaign: str) -> int:
    value = await connection.fetchval(
        "SELECT quick_donate_confirm_above_minor FROM surge.recurring_campaign_settings WHERE campaign = $1", campaign
    )
    return int(value) if value is not None else DEFAULT_CONFIRM_ABOVE_MINOR


async def quick_donate(
    pool: asyncpg.Pool,
    pipeline: Pipeline,
    campaign: Campaign,
    fields: dict[str, Any],
    *,
    confirmed: bool,
    client_ip: str | None,
) -> QuickResult:
    method = await pool.fetchrow(
        """SELECT customer_reference, payment_method_reference, donor FROM surge.saved_payment_methods
            WHERE id = $1 AND deleted_at IS NULL""",
        fields["method"],
    )
    if method is None:
        return QuickResult(QuickOutcome.METHOD_GONE)
    amount = int(fields["amount"])
    idempotency_key = f"quick:{fields['link']}"
    given = await pool.fetchrow(
        f"SELECT {DONATION_COLUMNS} FROM surge.donations WHERE api_key_id = $1 AND idempotency_key = $2",
        RECURRING_KEY.id,
        idempotency_key,
    )
    if given is not None:  # the link was followed before: its gift, not a second confirmation
        return result_of(Donation.from_row(given))
    if amount > await confirm_above_minor(pool, campaign.slug) and not confirmed:
        return QuickResult(QuickOutcome.CONFIRM)
    donor = method["donor"]
    request = DonationRequest(
        amount_minor=amount,
        currency=campaign.currency,
        campaign=campaign.slug,
        donor=donor,
        payment_method=off_session_token(method["customer_reference"], method["payment_method_reference"]),
        metadata={"quick_donate": str(fields["link"])},
        donor_key=donor_key(donor["first_name"], donor["last_name"], donor["postal_code"]),
        # The link, not the click: a second following (confirmed or not) is the same request.
        fingerprint=request_fingerprint({"quick": fields["link"], "amount": amount}),
        refcode=fields.get("refcode"),
    )
    await ensure_recurring_key(pool)
    outcome = await pipeline.submit(RECURRING_KEY, idempotency_key, request, campaign, client_ip)
    return result_of(outcome)


def result_of(outcome: Donation | Refusal) -> QuickResult:
    if isinstance(outcome, Refusal):
        if outcome.reason is RefusalReason.IDEMPOTENCY_IN_PROGRESS:
            return QuickResult(QuickOutcome.PROCESSING, outcome.donation)
        return QuickResult(QuickOutcome.REFUSED, reason=outcome.reason.value)
    if outcome.status == "succeeded":
        return QuickResult(QuickOutcome.CHARGED, outcome)
    if outcome.status in ("declined", "failed"):
        if outcome.decline_code == AUTHENTICATION_REQUIRED:
            return QuickResult(QuickOutcome.AUTHENTICATION_REQUIRED, outcome)
        return QuickResult(QuickOutcome.DECLINED, outcome, outcome.decline_code)
    return QuickResult(QuickOutcome.PROCESSING, outcome)
