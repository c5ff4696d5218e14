"""What the pipeline answers besides a donation: refusals (expected, per request) and overload (shed load).

``Pipeline.submit`` returns a :class:`~engine.pipeline.donations.Donation` (accepted, charged, declined, failed or
still processing) or a :class:`Refusal`; it raises :class:`OverloadError` when it will not take the request at all.
Only ``engine.api.errors`` turns these into HTTP statuses and error bodies.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from engine.campaigns import Campaign
from engine.pipeline.donations import Donation


class RefusalReason(StrEnum):
    IDEMPOTENCY_IN_PROGRESS = "idempotency_in_progress"  # the first request with this key is still charging
    IDEMPOTENCY_MISMATCH = "idempotency_mismatch"  # the key was used with another body
    LIMIT_EXCEEDED = "limit_exceeded"  # the donor's aggregate for the election would pass the limit
    EMPLOYER_REQUIRED = "employer_required"  # past the itemization threshold without employer and occupation
    VELOCITY_EXCEEDED = "velocity_exceeded"  # clear card testing from this source: refused
    CHALLENGE_REQUIRED = "challenge_required"  # a suspicious source: pass the page's challenge and send its token


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: RefusalReason
    campaign: Campaign
    donation: Donation | None = None  # the replayed donation, when there is one
    aggregate_minor: int | None = None
    room_minor: int | None = None


class CampaignRefusalReason(StrEnum):
    CAMPAIGN_MISSING = "campaign_missing"  # no such campaign
    CURRENCY_MISMATCH = "currency_mismatch"  # the campaign takes one currency, not this one
    ATTESTATION_REQUIRED = "attestation_required"  # the campaign needs the donor's citizenship attestation


@dataclass(frozen=True, slots=True)
class CampaignRefusal:
    """The request does not fit its campaign (``check_against_campaign``): refused before intake, nothing stored."""

    reason: CampaignRefusalReason
    campaign_slug: str
    campaign: Campaign | None = None  # None when there is no such campaign


class Overload(StrEnum):
    SHUTTING_DOWN = "shutting_down"
    IN_FLIGHT_FULL = "in_flight_full"
    QUEUE_FULL = "queue_full"
    INTAKE_SATURATED = "intake_saturated"


class OverloadError(Exception):
    """The pipeline will not take this request now; the client should retry later."""

    def __init__(self, overload: Overload) -> None:
        super().__init__(overload.value)
        self.overload = overload
