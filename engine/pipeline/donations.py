"""A donation as stored, and how it looks on the wire.

Internal status → API status: queued / charging / pending → ``processing``; the final ones keep their name
(succeeded, declined, failed). ``engine.api.errors`` maps them to HTTP (201, 202, 402).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

PROCESSING_STATUSES = frozenset({"queued", "charging", "pending"})
DONATION_COLUMNS = """id, api_key_id, idempotency_key, request_fingerprint, campaign, election, donor_key, amount_minor,
    currency, payment_method, donor, metadata, status, processor, processor_reference, decline_code,
    failure_message, fee_minor, refunded_minor, disputed_minor, attempts, created_at, updated_at, settled_at, refcode"""


def new_donation_id() -> str:
    """``don_``, the time in milliseconds (12 hex digits), then 48 random bits: 24 hex digits as before.

    Ids that grow with time keep the indexes keyed by them (the donations' primary key, the receipts', the ledger
    entries' references) appending at their right edge, as sequence keys do; wholly random ids sent each insert
    to a random leaf of each, so the pages inserts need spread over the whole of every index as the books grow.
    Two ids made in one millisecond still differ in 48 random bits."""
    return f"don_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(6)}"


@dataclass(frozen=True, slots=True)
class Donation:
    id: str
    api_key_id: str
    idempotency_key: str
    request_fingerprint: bytes
    campaign: str
    election: str
    donor_key: str
    amount_minor: int
    currency: str
    payment_method: str
    donor: dict[str, Any]
    metadata: dict[str, str]
    status: str
    processor: str | None
    processor_reference: str | None
    decline_code: str | None
    failure_message: str | None
    fee_minor: int | None
    refunded_minor: int
    disputed_minor: int
    attempts: int
    created_at: datetime
    updated_at: datetime
    settled_at: datetime | None
    refcode: str | None  # attribution: the donation page's ?refcode= (or the API's refcode field)

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Donation:
        return cls(**{name: row[name] for name in cls.__slots__})

    @property
    def api_status(self) -> str:
        return "processing" if self.status in PROCESSING_STATUSES else self.status

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "donation",
            "status": self.api_status,
            "amount": self.amount_minor,
            "amount_refunded": self.refunded_minor,
            "amount_disputed": self.disputed_minor,
            "currency": self.currency.lower(),
            "campaign": self.campaign,
            "election": self.election,
            "fee": self.fee_minor,
            "processor": self.processor,
            "processor_reference": self.processor_reference,
            "payment_method": self.payment_method,
            "decline_code": self.decline_code,
            "failure_message": self.failure_message,
            "donor": self.donor,
            "metadata": self.metadata,
            "created": self.created_at.isoformat(),
            "updated": self.updated_at.isoformat(),
            "settled": self.settled_at.isoformat() if self.settled_at else None,
            "refcode": self.refcode,
        }


async def fetch_donation(connection: asyncpg.Connection | asyncpg.Pool, donation_id: str) -> Donation | None:
    row = await connection.fetchrow(f"SELECT {DONATION_COLUMNS} FROM surge.donations WHERE id = $1", donation_id)
    return Donation.from_row(row) if row else None
