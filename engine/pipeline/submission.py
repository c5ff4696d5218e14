"""Submitting a donation: record it (intake batch), then charge it now or leave it to the durable queue.

A request that finds processor capacity (a rate token, a free slot, a closed breaker) is recorded as ``charging``
with a lease and charged at once; otherwise it is recorded ``queued`` and answered with the donation still
processing. Intake refusals (replays, limits, velocity) come back as :class:`~engine.pipeline.outcomes.Refusal`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from engine.campaigns import Campaign
from engine.keys import ApiKey
from engine.pipeline.challenge import CampaignChallenges, ChallengeVerifier
from engine.pipeline.charger import Charger
from engine.pipeline.donation_request import DonationRequest
from engine.pipeline.donations import Donation, new_donation_id
from engine.pipeline.intake import IntakeItem, IntakeOutcome, IntakeResult
from engine.pipeline.limits import PipelineLimits
from engine.pipeline.outcomes import Overload, OverloadError, Refusal, RefusalReason
from engine.pipeline.queue import DurableQueue
from ledger.batcher import BatcherFullError, GroupCommitter


class Submission:
    def __init__(
        self,
        intake: GroupCommitter[IntakeItem, IntakeResult],
        charger: Charger,
        queue: DurableQueue,
        limits: PipelineLimits,
        challenge_verifier: ChallengeVerifier | None = None,
        campaign_challenges: CampaignChallenges | None = None,
    ) -> None:
        self._intake = intake
        self._challenge_verifier = challenge_verifier
        # Only with a verifier: a challenge nobody can pass would refuse every donor of the campaign.
        self._campaign_challenges = campaign_challenges if challenge_verifier is not None else None
        self._charger = charger
        self._queue = queue
        self.limits = limits

    async def submit(
        self,
        key: ApiKey,
        idempotency_key: str,
        request: DonationRequest,
        campaign: Campaign,
        client_ip: str | None,
        challenge: str | None = None,
    ) -> Donation | Refusal:
        # Verified before a gate slot is taken: the provider's answer can take a while.
        verifier = self._challenge_verifier
        challenge_passed = (
            bool(challenge) and verifier is not None and await verifier.verify(challenge or "", client_ip)
        )
        campaign_challenge = (
            not challenge_passed
            and self._campaign_challenges is not None
            and await self._campaign_challenges.required(campaign)
        )
        charger = self._charger
        chosen = charger.acquire_any()
        now = datetime.now(UTC)
        item = IntakeItem(
            donation_id=new_donation_id(),
            api_key_id=key.id,
            idempotency_key=idempotency_key,
            request=request,
            campaign=campaign,
            status="charging" if chosen else "queued",
            next_attempt_at=now + self.limits.lease if chosen else now,
            processor=chosen[0].name if chosen else None,
            client_ip=client_ip,
            created_at=now,
            challenge_passed=challenge_passed,
            campaign_challenge=campaign_challenge,
        )
        try:
            result = await self._intake.submit_nowait(item)
        except BatcherFullError:
            charger.return_unused(chosen)
            raise OverloadError(Overload.INTAKE_SATURATED) from None
        except BaseException:
            charger.return_unused(chosen)
            raise
        if result.outcome is not IntakeOutcome.ACCEPTED:
            charger.return_unused(chosen)
            return _refusal(result, campaign)
        donation = _donation_from_item(item)
        if chosen is None:
            self._queue.enqueued()
            return donation
        processor, gate = chosen
        charge = await charger.charge(processor, gate, donation)
        return await charger.apply(donation, processor.name, charge)


def _donation_from_item(item: IntakeItem) -> Donation:
    request = item.request
    return Donation(
        id=item.donation_id,
        api_key_id=item.api_key_id,
        idempotency_key=item.idempotency_key,
        request_fingerprint=request.fingerprint,
        campaign=item.campaign.slug,
        election=item.campaign.election,
        donor_key=request.donor_key,
        amount_minor=request.amount_minor,
        currency=request.currency,
        payment_method=request.payment_method,
        donor=request.donor,
        metadata=request.metadata,
        status=item.status,
        processor=item.processor,
        processor_reference=None,
        decline_code=None,
        failure_message=None,
        fee_minor=None,
        refunded_minor=0,
        disputed_minor=0,
        attempts=0,
        created_at=item.created_at,
        updated_at=item.created_at,
        settled_at=None,
        refcode=request.refcode,
    )


def _refusal(result: IntakeResult, campaign: Campaign) -> Donation | Refusal:
    outcome = result.outcome
    if outcome is IntakeOutcome.REPLAY:
        donation = result.donation
        if donation is None or donation.status == "charging":
            return Refusal(RefusalReason.IDEMPOTENCY_IN_PROGRESS, campaign, donation)
        return donation
    reasons = {
        IntakeOutcome.IDEMPOTENCY_MISMATCH: RefusalReason.IDEMPOTENCY_MISMATCH,
        IntakeOutcome.LIMIT_EXCEEDED: RefusalReason.LIMIT_EXCEEDED,
        IntakeOutcome.EMPLOYER_REQUIRED: RefusalReason.EMPLOYER_REQUIRED,
        IntakeOutcome.VELOCITY_EXCEEDED: RefusalReason.VELOCITY_EXCEEDED,
        IntakeOutcome.CHALLENGE_REQUIRED: RefusalReason.CHALLENGE_REQUIRED,
    }
    reason = reasons.get(outcome)
    if reason is None:
        raise RuntimeError(f"unhandled intake outcome {outcome}")
    return Refusal(reason, campaign, aggregate_minor=result.aggregate_minor, room_minor=result.room_minor)
