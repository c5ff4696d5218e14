"""The donation page's challenge (hCaptcha / Cloudflare Turnstile), verified server-side.

When velocity finds a source moderately suspicious (``engine.pipeline.velocity``), intake answers
``challenge_required``; the page shows the widget, and the client sends the widget's token as the donation's
``challenge`` field. The token is verified here, before intake, through a :class:`ChallengeVerifier`:

- ``siteverify``: the provider's siteverify endpoint (hCaptcha ``https://api.hcaptcha.com/siteverify``, Turnstile
  ``https://challenges.cloudflare.com/turnstile/v0/siteverify``; both take ``secret``, ``response``, ``remoteip``
  and answer ``{"success": …}``), called through ``adapters.siteverify``;
- ``test``: deterministic, for tests and load tests: accepts exactly the tokens that start with
  :data:`TEST_TOKEN_PREFIX`. Never configure it in production: anyone could pass;
- ``none`` (the default): no verifier, so no challenge can be passed; velocity then allows moderate suspicion and
  refuses only clear card testing.

Besides velocity's per-source rule, a campaign can ask every donor for the challenge (:class:`CampaignChallenges`,
the campaign's ``page.challenge``): ``always``, or ``auto`` — while the campaign's decline ratio over its most recent
attempts is at least ``page.challenge_decline_ratio``, which is what a card-testing run against one campaign looks
like from many addresses at once. The rule is applied by intake with velocity's (a fresh request without a passed
challenge is answered ``challenge_required``; a replay of an accepted one is not asked again), so a bot posting to
``/v1/donations`` directly meets it as the page does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from adapters.siteverify import SiteVerifyClient, SiteVerifyError
from engine.campaigns import Campaign
from engine.pipeline.velocity import campaign_recent_declines

_logger = logging.getLogger(__name__)

CHALLENGE_VERIFIERS = ("none", "test", "siteverify")
TEST_TOKEN_PREFIX = "test_pass_"


class ChallengeVerifier(Protocol):
    async def verify(self, token: str, remote_ip: str | None) -> bool:
        """Did a human pass the challenge that produced ``token``? Never raises: a failure is False."""
        ...


class TestChallengeVerifier:
    """Accepts exactly the tokens that start with ``test_pass_``."""

    async def verify(self, token: str, remote_ip: str | None) -> bool:
        return token.startswith(TEST_TOKEN_PREFIX)


class SiteVerifyChallengeVerifier:
    def __init__(self, client: SiteVerifyClient) -> None:
        self._client = client

    async def verify(self, token: str, remote_ip: str | None) -> bool:
        try:
            return await self._client.verify(token, remote_ip)
        except SiteVerifyError as error:
            # The provider could not say: the donor is asked again rather than admitted unchecked.
            _logger.warning("challenge verification failed: %s", error)
            return False


@dataclass(frozen=True)
class ChallengeConfig:
    verifier: str = "none"
    verify_url: str | None = None
    secret: str | None = None
    timeout_ms: int = 3_000

    def __post_init__(self) -> None:
        if self.verifier not in CHALLENGE_VERIFIERS:
            raise ValueError(f"the challenge verifier must be one of {', '.join(CHALLENGE_VERIFIERS)}")
        if self.verifier == "siteverify" and not (self.verify_url and self.secret):
            raise ValueError("the siteverify challenge verifier needs a verify URL and a secret")

    @property
    def enabled(self) -> bool:
        return self.verifier != "none"


def challenge_verifier(config: ChallengeConfig) -> ChallengeVerifier | None:
    if config.verifier == "test":
        return TestChallengeVerifier()
    if config.verifier == "siteverify" and config.verify_url and config.secret:
        return SiteVerifyChallengeVerifier(SiteVerifyClient(config.verify_url, config.secret, config.timeout_ms))
    return None


CAMPAIGN_SAMPLE_MAX = 500  # the campaign's most recent attempts weighed by "auto": bounds what one check reads
CAMPAIGN_RATIO_TTL_S = 3.0  # one query per campaign and process this often, whatever the request rate


class CampaignChallenges:
    """Does a campaign ask every donor for the challenge right now? Only asked where a verifier is configured (else
    no challenge could be passed). ``auto`` reads the campaign's recent declines at most once per
    :data:`CAMPAIGN_RATIO_TTL_S` per process: concurrent requests share one query."""

    def __init__(self, pool: asyncpg.Pool, ttl_s: float = CAMPAIGN_RATIO_TTL_S) -> None:
        self._pool = pool
        self._ttl_s = ttl_s
        self._elevated: dict[str, tuple[float, asyncio.Future[bool]]] = {}

    async def required(self, campaign: Campaign) -> bool:
        mode = campaign.page.challenge
        if mode != "auto":
            return mode == "always"
        now = time.monotonic()
        cached = self._elevated.get(campaign.slug)
        if cached is None or cached[0] <= now:
            future: asyncio.Future[bool] = asyncio.ensure_future(self._decline_ratio_reached(campaign))
            self._elevated[campaign.slug] = (now + self._ttl_s, future)
            cached = self._elevated[campaign.slug]
        try:
            return await asyncio.shield(cached[1])
        except (OSError, asyncpg.PostgresError):
            self._elevated.pop(campaign.slug, None)  # not cached: the next request asks again
            raise

    async def _decline_ratio_reached(self, campaign: Campaign) -> bool:
        page = campaign.page
        stats = await campaign_recent_declines(self._pool, campaign.slug, page.challenge_window_s, CAMPAIGN_SAMPLE_MAX)
        if stats.attempts < page.challenge_sample_min:
            return False
        return stats.declines / stats.attempts >= page.challenge_decline_ratio
