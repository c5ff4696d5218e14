"""HTTP plumbing for a challenge provider's siteverify endpoint (hCaptcha and Cloudflare Turnstile share its shape).

``POST {url}`` with the form fields ``secret``, ``response`` (the widget's token) and ``remoteip``; the answer is
JSON with ``success`` (bool) and ``error-codes``. A session is opened per call: verification happens only for
requests that were challenged, so it is rare, and nothing needs closing at shutdown.
"""

from __future__ import annotations

import aiohttp


class SiteVerifyError(Exception):
    """The provider did not answer usably (network, timeout, non-JSON, HTTP error)."""


class SiteVerifyClient:
    def __init__(self, url: str, secret: str, timeout_ms: int = 3_000) -> None:
        self.url = url
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout_ms / 1000)

    async def verify(self, token: str, remote_ip: str | None) -> bool:
        form = {"secret": self._secret, "response": token}
        if remote_ip:
            form["remoteip"] = remote_ip
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as session,
                session.post(self.url, data=form) as response,
            ):
                if response.status != 200:
                    raise SiteVerifyError(f"siteverify answered HTTP {response.status}")
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise SiteVerifyError(f"siteverify failed: {type(error).__name__}: {error}") from error
        return isinstance(body, dict) and body.get("success") is True
