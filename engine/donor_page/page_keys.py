"""The form key a campaign's donation page posts ``/v1/donations`` with.

A form key is publishable (Role.FORM: it creates donations and reads only the ones it created), so the page must
carry one; each campaign's page gets its own, made on the page's first render, so that revoking it (``surge keys``,
``UPDATE surge.api_keys SET revoked_at``) cuts off that page alone — the next render makes a fresh one. Its secret
is kept in clear in ``surge.donation_page_keys``: it is written into every page served, so there is nothing to hide.
"""

from __future__ import annotations

import time

import asyncpg

from engine.keys import KEY_CACHE_TTL_S, Role, create_key


class PageKeys:
    """Campaign → its page key's secret, cached per process for as long as the API caches verified keys."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._cache: dict[str, tuple[str, float]] = {}

    async def secret(self, campaign: str) -> str:
        """The secret of the campaign's page key (made when it has none, or only a revoked one)."""
        now = time.monotonic()
        cached = self._cache.get(campaign)
        if cached is not None and cached[1] > now:
            return cached[0]
        secret = await _live_secret(self._pool, campaign)
        if secret is None:
            secret = await _new_key(self._pool, campaign)
        if len(self._cache) > 10_000:  # bounded: one entry per campaign
            self._cache.clear()
        self._cache[campaign] = (secret, now + KEY_CACHE_TTL_S)  # a revoked key is refused within this time too
        return secret


async def _new_key(pool: asyncpg.Pool, campaign: str) -> str:
    async with pool.acquire() as connection, connection.transaction():
        # Two processes rendering a new campaign's first page at once make one key, not two.
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext('donation_page_keys:' || $1))", campaign)
        secret = await _live_secret(connection, campaign)
        if secret is not None:
            return secret
        key, secret = await create_key(connection, Role.FORM, label=f"donation page: {campaign}")
        await connection.execute(
            """INSERT INTO surge.donation_page_keys (campaign, api_key_id, secret) VALUES ($1, $2, $3)
               ON CONFLICT (campaign) DO UPDATE
               SET api_key_id = EXCLUDED.api_key_id, secret = EXCLUDED.secret, created_at = now()""",
            campaign,
            key.id,
            secret,
        )
        return secret


async def _live_secret(connection: asyncpg.Connection | asyncpg.Pool, campaign: str) -> str | None:
    secret: str | None = await connection.fetchval(
        """SELECT p.secret FROM surge.donation_page_keys p JOIN surge.api_keys k ON k.id = p.api_key_id
            WHERE p.campaign = $1 AND k.revoked_at IS NULL""",
        campaign,
    )
    return secret
