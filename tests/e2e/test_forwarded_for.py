"""X-Forwarded-For over real HTTP: only the entries appended by the configured number of trusted proxies count.

A proxy appends the address it saw to the header, so a client behind it controls everything to the left of that.
A card-testing bot that writes a fresh address there on each attempt must still be seen as one source.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine.settings import ConfigError, Settings, load_settings
from tests.e2e.conftest import Surge, donation, start_surge, surge_settings


async def served(database_url: str, tmp_path: Path, **overrides: Any) -> AsyncIterator[Surge]:
    server, client, pool, keys = await start_surge(database_url, surge_settings(database_url, tmp_path, **overrides))
    try:
        yield Surge(client, pool, keys, server.app)
    finally:
        await client.close()
        await pool.close()


@pytest.fixture
async def one_proxy(database_url: str, tmp_path: Path) -> AsyncIterator[Surge]:
    # The setting that existed before SURGE_TRUSTED_PROXY_HOPS: it means exactly one trusted proxy.
    async for surge in served(database_url, tmp_path, trust_forwarded_for=True):
        yield surge


@pytest.fixture
async def two_proxies(database_url: str, tmp_path: Path) -> AsyncIterator[Surge]:
    async for surge in served(database_url, tmp_path, trusted_proxy_hops=2):
        yield surge


@pytest.fixture
async def no_proxy(database_url: str, tmp_path: Path) -> AsyncIterator[Surge]:
    async for surge in served(database_url, tmp_path):
        yield surge


async def recorded_address(surge: Surge, donation_id: str) -> str | None:
    address: str | None = await surge.pool.fetchval(
        "SELECT host(client_ip) FROM surge.donations WHERE id = $1", donation_id
    )
    return address


async def donate_from(surge: Surge, forwarded: list[str], amount: int = 2_500, **donor: Any) -> str:
    headers = [("X-Forwarded-For", value) for value in forwarded]
    key = surge.next_key()
    response = await surge.client.post(
        "/v1/donations",
        json=donation(amount, **donor),
        headers=[*surge.auth().items(), ("Idempotency-Key", key), *headers],
    )
    assert response.status in (200, 201, 202, 402), await response.text()
    donation_id: str = await surge.pool.fetchval("SELECT id FROM surge.donations WHERE idempotency_key = $1", key)
    return donation_id


async def test_a_spoofed_leftmost_entry_is_not_the_client_behind_one_proxy(one_proxy: Surge) -> None:
    # The bot sends "X-Forwarded-For: <made up>"; the proxy appends the bot's real address.
    first = await donate_from(one_proxy, ["10.9.8.7, 203.0.113.7"])
    assert await recorded_address(one_proxy, first) == "203.0.113.7"


async def test_a_bot_rotating_spoofed_addresses_stays_one_source(one_proxy: Surge) -> None:
    """The velocity check counts declines per recorded address: rotating the spoofed part must not spread them."""
    for n in range(5):
        await donate_from(one_proxy, [f"198.51.100.{n}, 203.0.113.9"], 100 + n, payment_method="pm_card_chargeDeclined")
    rows = await one_proxy.pool.fetch(
        "SELECT host(client_ip) AS address, count(*) AS declines FROM surge.donations WHERE status = 'declined'"
        " GROUP BY client_ip"
    )
    assert [(r["address"], r["declines"]) for r in rows] == [("203.0.113.9", 5)]


async def test_two_hops_take_the_second_entry_from_the_right(two_proxies: Surge) -> None:
    # client-written, the client as the outer proxy saw it, the outer proxy as the inner one saw it.
    spoofed = await donate_from(two_proxies, ["1.1.1.1, 192.0.2.44, 10.0.0.2"])
    assert await recorded_address(two_proxies, spoofed) == "192.0.2.44"
    # The same list across several header lines is one list, in order.
    split = await donate_from(two_proxies, ["1.1.1.1", "192.0.2.45", "10.0.0.2"], first_name="Ann")
    assert await recorded_address(two_proxies, split) == "192.0.2.45"
    # Ports and IPv6 brackets are accepted and dropped.
    ported = await donate_from(two_proxies, ["[2001:db8::1]:4711, 10.0.0.2"], first_name="Bo")
    assert await recorded_address(two_proxies, ported) == "2001:db8::1"


async def test_malformed_or_short_headers_fall_back_to_the_peer(two_proxies: Surge) -> None:
    for n, forwarded in enumerate(
        (["not-an-address, 10.0.0.2"], ["10.0.0.2"], ["fe80::1%eth0, 10.0.0.2"], [", 10.0.0.2"], [])
    ):
        made = await donate_from(two_proxies, forwarded, first_name=f"Peer{n}")
        assert await recorded_address(two_proxies, made) == "127.0.0.1", forwarded


async def test_without_trusted_proxies_the_header_is_ignored(no_proxy: Surge) -> None:
    made = await donate_from(no_proxy, ["203.0.113.50"])
    assert await recorded_address(no_proxy, made) == "127.0.0.1"


def test_the_hop_count_is_validated_and_read_from_the_environment() -> None:
    assert load_settings({"SURGE_TRUSTED_PROXY_HOPS": "2"}).forwarded_hops == 2
    assert Settings().forwarded_hops == 0
    assert Settings(trust_forwarded_for=True).forwarded_hops == 1
    with pytest.raises(ConfigError, match="SURGE_TRUSTED_PROXY_HOPS must be 0-16"):
        Settings(trusted_proxy_hops=17)
