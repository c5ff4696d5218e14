"""First start on an empty database: one API key per role (printed once, stored hashed) and, on the embedded
database, a `demo` campaign — so that a newcomer can post a donation with the printed form key right away."""

from __future__ import annotations

import asyncpg

from engine.campaigns import FEDERAL_LIMIT_PER_ELECTION_MINOR, Campaign, create_campaign
from engine.keys import Role, create_key

DEMO_CAMPAIGN = Campaign(
    slug="demo",
    name="Demo Campaign",
    currency="USD",
    election="2026-general",
    contribution_limit_minor=FEDERAL_LIMIT_PER_ELECTION_MINOR,
    allowed_origins=("*",),
)


async def bootstrap(connection: asyncpg.Connection, *, create_demo_campaign: bool) -> dict[Role, str]:
    """Returns the secrets of the keys created now (none when keys already existed)."""
    # An advisory lock: two `surge serve` starting together must not both create keys.
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext('surge.bootstrap'))")
        created: dict[Role, str] = {}
        if not await connection.fetchval("SELECT EXISTS (SELECT 1 FROM surge.api_keys)"):
            for role in Role:
                _, secret = await create_key(connection, role, label=f"initial {role.value} key")
                created[role] = secret
        if create_demo_campaign and not await connection.fetchval("SELECT EXISTS (SELECT 1 FROM surge.campaigns)"):
            await create_campaign(connection, DEMO_CAMPAIGN)
    return created
