"""Migration 0009 gives each recorded fee its currency, in place: a fee recorded before it was booked in the
donation's currency, so that is the currency it keeps; a fee not yet known stays NULL in both columns."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest

from engine import database
from tests.conftest import _with_database
from toolkit import migrations


@pytest.fixture
async def empty_database(database_url: str) -> AsyncIterator[str]:
    name = f"surge_fees_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield _with_database(database_url, name)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


async def migrate_below(connection: asyncpg.Connection, version: int, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = migrations.available_migrations

    def older(packages: Sequence[str]) -> list[migrations.Migration]:
        return [m for m in shipped(packages) if m.version < version]

    with monkeypatch.context() as patch:
        patch.setattr(migrations, "available_migrations", older)
        await database.migrate(connection)


async def test_recorded_fees_keep_the_donation_currency_and_unknown_ones_stay_unknown(
    empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = await asyncpg.connect(empty_database)
    try:
        await migrate_below(connection, 9, monkeypatch)
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
