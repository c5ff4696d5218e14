"""A real localstripe for the Stripe adapter tests: one server per session, in its own process on 127.0.0.1 and
a free port with an in-memory store (see ``localstripe_server.py``), emptied before every test."""

from __future__ import annotations

import select
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe

from adapters.stripe import StripeConfig, StripeProcessor
from tests.e2e.conftest import Surge, running_surge, surge_settings

SERVER_SCRIPT = Path(__file__).with_name("localstripe_server.py")
STARTUP_TIMEOUT_S = 20
WEBHOOK_SECRET = "whsec_surge_test_secret"
SECRET_KEY = "sk_test_surge"


@pytest.fixture(scope="session")
def localstripe_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log_path = tmp_path_factory.mktemp("localstripe") / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, str(SERVER_SCRIPT)], stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], STARTUP_TIMEOUT_S)
        line = process.stdout.readline() if ready else ""
        if not line.strip().isdigit():
            raise RuntimeError(f"localstripe did not start: {log_path.read_text()}")
        yield f"http://127.0.0.1:{int(line)}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(autouse=True)
def empty_localstripe(localstripe_url: str) -> None:
    """Every test starts from an empty store (webhook registrations survive; tests re-register theirs)."""
    request = urllib.request.Request(f"{localstripe_url}/_config/data", method="DELETE")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def stripe_config(api_base: str, **overrides: Any) -> StripeConfig:
    # localstripe has no rate limit; the adapter's own limiter (25/s for test keys) would only slow the tests down.
    settings: dict[str, Any] = {"secret_key": SECRET_KEY, "webhook_secret": WEBHOOK_SECRET, "api_base": api_base}
    settings["rate_limit_per_second"] = 1000.0
    return StripeConfig(**(settings | overrides))


@pytest.fixture
async def stripe_client(localstripe_url: str) -> AsyncIterator[stripe.StripeClient]:
    """A plain SDK client for setting up and inspecting localstripe beside the adapter."""
    http_client = stripe.AIOHTTPClient()
    client = stripe.StripeClient(SECRET_KEY, base_addresses={"api": localstripe_url}, http_client=http_client)
    yield client
    await http_client.close_async()


@pytest.fixture
async def processor(localstripe_url: str) -> AsyncIterator[StripeProcessor]:
    adapter = StripeProcessor(stripe_config(localstripe_url))
    yield adapter
    await adapter.close()


@pytest.fixture
async def surge_on_stripe(database_url: str, localstripe_url: str, tmp_path: Path) -> AsyncIterator[Surge]:
    """The engine charging through the Stripe adapter, against localstripe."""
    settings = surge_settings(database_url, tmp_path)
    async with running_surge(database_url, settings, [StripeProcessor(stripe_config(localstripe_url))]) as surge:
        yield surge
