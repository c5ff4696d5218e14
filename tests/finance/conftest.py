"""Finance test helpers: the served engine (from tests/e2e), donations written straight into the engine's tables
with chosen dates, and the processor's record reached through the running app."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from adapters.simulated import SimulatedProcessor
from engine.api.state import PROCESSORS
from tests.e2e.conftest import Surge, donation, surge  # noqa: F401  (the fixture, re-exported for these tests)

__all__ = ["Surge", "donation", "insert_donation", "simulated_processor"]


def simulated_processor(served: Surge) -> SimulatedProcessor:
    processor = served.app[PROCESSORS][0][0]
    if not isinstance(processor, SimulatedProcessor):
        raise TypeError(f"the served engine's first processor is {type(processor).__name__}, not the simulated one")
    return processor


def donor(first: str, last: str, **extra: Any) -> dict[str, Any]:
    person = {
        "first_name": first,
        "last_name": last,
        "email": f"{first.lower()}@example.org",
        "address_line1": f"{len(first)} Elm St",
        "city": "Springfield",
        "state": "IL",
        "postal_code": "62701",
        "country": "US",
        "employer": "Acme",
        "occupation": "Engineer",
    }
    person.update(extra)
    return {k: v for k, v in person.items() if v is not None}


async def insert_donation(
    pool: asyncpg.Pool,
    *,
    donation_id: str | None = None,
    amount: int,
    settled_at: datetime,
    person: dict[str, Any],
    campaign: str = "demo",
    election: str = "2026-general",
    status: str = "succeeded",
    refunded: int = 0,
    currency: str = "USD",
) -> str:
    """A donation row as the engine leaves it once settled (no ledger entry: reports that read donations only)."""
    donation_id = donation_id or "don_" + secrets.token_hex(8)
    async with pool.acquire() as connection:
        key_id = await connection.fetchval("SELECT id FROM surge.api_keys ORDER BY id LIMIT 1")
        await connection.execute(
            """INSERT INTO surge.donations (id, api_key_id, idempotency_key, request_fingerprint, campaign, election,
                   donor_key, amount_minor, currency, payment_method, donor, status, processor, refunded_minor,
                   decline_code, created_at, settled_at)
               VALUES ($1, $2, $1, '\\x00', $3, $4, $5, $6, $7, 'pm_card_visa', $8::text::jsonb, $9, 'simulated',
                       $10, $11, $12, $12)""",
            donation_id,
            key_id,
            campaign,
            election,
            f"{person['last_name']}|{person['first_name']}|{person['postal_code']}".lower(),
            amount,
            currency,
            orjson.dumps(person).decode(),
            status,
            refunded,
            "card_declined" if status == "declined" else None,
            settled_at,
        )
    return donation_id
