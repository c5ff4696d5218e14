"""The siteverify adapter against a real HTTP server in hCaptcha's / Turnstile's shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.siteverify import SiteVerifyClient, SiteVerifyError
from engine.pipeline.challenge import ChallengeConfig, SiteVerifyChallengeVerifier, challenge_verifier

SECRET = "0x0000000000000000000000000000000AA"


@pytest.fixture
async def provider() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    async def siteverify(request: web.Request) -> web.Response:
        form = dict(await request.post())
        seen.append(form)
        if form.get("response") == "explode":
            return web.Response(status=500, text="oops")
        ok = form.get("secret") == SECRET and form.get("response") == "human"
        return web.json_response({"success": ok, "error-codes": [] if ok else ["invalid-input-response"]})

    app = web.Application()
    app.router.add_post("/siteverify", siteverify)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/siteverify")), seen
    finally:
        await server.close()


async def test_siteverify_sends_the_secret_token_and_address_and_reads_success(
    provider: tuple[str, list[dict[str, Any]]],
) -> None:
    url, seen = provider
    client = SiteVerifyClient(url, SECRET)
    assert await client.verify("human", "198.51.100.7") is True
    assert seen[-1] == {"secret": SECRET, "response": "human", "remoteip": "198.51.100.7"}
    assert await client.verify("bot", None) is False
    assert "remoteip" not in seen[-1]
    with pytest.raises(SiteVerifyError, match="HTTP 500"):
        await client.verify("explode", None)


async def test_the_verifier_built_from_settings_treats_a_provider_failure_as_not_passed(
    provider: tuple[str, list[dict[str, Any]]],
) -> None:
    url, _ = provider
    verifier = challenge_verifier(ChallengeConfig("siteverify", url, SECRET))
    assert isinstance(verifier, SiteVerifyChallengeVerifier)
    assert await verifier.verify("human", None) is True
    assert await verifier.verify("explode", None) is False
    assert challenge_verifier(ChallengeConfig()) is None
