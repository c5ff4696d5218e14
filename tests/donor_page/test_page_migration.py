"""Migration 0016 moves an existing database forward in place: campaigns made before it get the default page
settings, donations made before it have no refcode, and the refcode's CHECK holds from then on."""

from __future__ import annotations

import asyncpg
import pytest

from engine import database
from engine.campaigns import PageSettings, list_campaigns
from tests.migrating import empty_database, migrate_up_to  # noqa: F401  (a fixture)


async def test_campaigns_and_donations_from_before_the_page(
    empty_database: str,  # noqa: F811  (the fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connection = await asyncpg.connect(empty_database)
    try:
        await migrate_up_to(connection, 15, monkeypatch)
        await connection.execute(
            """INSERT INTO surge.campaigns (slug, name, currency, election, contribution_limit_minor)
               VALUES ('old', 'Old', 'USD', '2026-general', 350000);
               INSERT INTO surge.api_keys (id, secret_hash, role) VALUES ('key_1', '\\x00', 'form');
               INSERT INTO surge.donations (id, api_key_id, idempotency_key, request_fingerprint, campaign,
                   election, donor_key, amount_minor, currency, payment_method, donor, status)
               VALUES ('don_old', 'key_1', 'k', '\\x00', 'old', '2026-general', 'doe|jane|62701', 5000, 'USD',
                       'pm_card_visa', '{}', 'succeeded')"""
        )

        applied = await database.migrate(connection)

        assert (16, "donation_page") in [(m.version, m.name) for m in applied]
        [campaign] = await list_campaigns(connection)
        assert campaign.page == PageSettings()
        assert await connection.fetchval("SELECT refcode FROM surge.donations WHERE id = 'don_old'") is None
        await connection.execute("UPDATE surge.donations SET refcode = 'spring_2026.email-1' WHERE id = 'don_old'")
        with pytest.raises(asyncpg.CheckViolationError):
            await connection.execute("UPDATE surge.donations SET refcode = 'no spaces' WHERE id = 'don_old'")
    finally:
        await connection.close()
