"""Migration 0009 gives each recorded fee its currency, in place: a fee recorded before it was booked in the
donation's currency, so that is the currency it keeps; a fee not yet known stays NULL in both columns."""

from __future__ import annotations

import asyncpg
import pytest

from engine import database
from tests.migrating import empty_database, migrate_up_to  # noqa: F401  (a fixture)


async def test_recorded_fees_keep_the_donation_currency_and_unknown_ones_stay_unknown(
    empty_database: str,  # noqa: F811  (the fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connection = await asyncpg.connect(empty_database)
    try:
        await migrate_up_to(connection, 8, monkeypatch)
        await connection.execute(
            """INSERT INTO surge.campaigns (slug, name, currency, election, contribution_limit_minor)
               VALUES ('demo', 'Demo', 'EUR', '2026-general', 330000);
               INSERT INTO surge.api_keys (id, secret_hash, role) VALUES ('key_1', '\\x00', 'form')"""
        )
        for donation_id, fee in (("don_known", 145), ("don_unknown", None)):
            await connection.execute(
                """INSERT INTO surge.donations (id, api_key_id, idempotency_key, request_fingerprint, campaign,
                       election, donor_key, amount_minor, currency, payment_method, donor, status, processor, fee_minor)
                   VALUES ($1, 'key_1', $1, '\\x00', 'demo', '2026-general', 'doe|jane|62701', 5000, 'EUR',
                           'pm_card_visa', '{}', 'succeeded', 'simulated', $2)""",
                donation_id,
                fee,
            )

        applied = await database.migrate(connection)

        assert (9, "fee_currency") in [(m.version, m.name) for m in applied]
        rows = await connection.fetch("SELECT id, fee_minor, fee_currency FROM surge.donations ORDER BY id")
        assert [tuple(row) for row in rows] == [("don_known", 145, "EUR"), ("don_unknown", None, None)]
        with pytest.raises(asyncpg.CheckViolationError):
            await connection.execute("UPDATE surge.donations SET fee_minor = 10 WHERE id = 'don_unknown'")
    finally:
        await connection.close()
