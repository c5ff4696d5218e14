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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from adapters.siteverify import SiteVerifyClient, SiteVerifyError

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
