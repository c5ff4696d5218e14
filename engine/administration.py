"""What an administrator does — open a campaign, issue or revoke a key — the one way for the API, the CLI and the
dashboard: the change and its audit record in one transaction."""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from engine import chart_of_accounts
from engine.audit import Actor, AuditAction, record
from engine.campaigns import Campaign, create_campaign
from engine.keys import ApiKey, Role, create_key, revoke_key


async def open_campaign(
    connection: asyncpg.Connection, campaign: Campaign, processors: Iterable[str], actor: Actor
) -> None:
    """Create the campaign and its accounts with every configured processor; raises ``CampaignExistsError``."""
    async with connection.transaction():
        await create_campaign(connection, campaign)
        for processor in processors:
            await chart_of_accounts.ensure_processor_accounts(connection, processor, campaign.currency)
        await record(connection, actor, AuditAction.CAMPAIGN_CREATED, campaign.slug, campaign.as_json())


async def issue_key(connection: asyncpg.Connection, role: Role, label: str | None, actor: Actor) -> tuple[ApiKey, str]:
    """A new key and its secret (shown once, never stored)."""
    async with connection.transaction():
        key, secret = await create_key(connection, role, label)
        await record(connection, actor, AuditAction.KEY_CREATED, key.id, {"role": role.value, "label": label})
    return key, secret


async def withdraw_key(connection: asyncpg.Connection, key_id: str, actor: Actor) -> bool:
    """Revoke a key; True when this call revoked it (False: unknown or revoked already)."""
    async with connection.transaction():
        revoked = await revoke_key(connection, key_id)
        if revoked:
            await record(connection, actor, AuditAction.KEY_REVOKED, key_id)
    return revoked
