"""Webhook events as the simulator keeps them (``simulator.events``), and the ids of everything it records."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from adapters.simulated import webhooks


def new_id(prefix: str) -> str:
    # Random, never from the seeded generator: two processes with one seed must not mint the same ids.
    return f"{prefix}_sim_{secrets.token_hex(12)}"


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: str
    type: str
    object_id: str  # the refund, dispute, payout or charge the event is about
    payload: bytes


def new_event(event_id: str, event_type: str, now: datetime, data_object: Mapping[str, Any]) -> StoredEvent:
    payload = webhooks.event_payload(event_id, event_type, now, data_object)
    return StoredEvent(event_id, event_type, data_object["id"], payload)


async def insert_events(
    connection: asyncpg.Connection, account: str, events: Sequence[StoredEvent], now: datetime
) -> None:
    await connection.execute(
        """INSERT INTO simulator.events (id, account, type, object_id, payload, created_at)
           SELECT e.id, $1, e.type, e.object_id, e.payload, $5
             FROM unnest($2::text[], $3::text[], $4::text[], $6::text[]) AS e(id, type, payload, object_id)""",
        account,
        [e.id for e in events],
        [e.type for e in events],
        [e.payload.decode() for e in events],
        now,
        [e.object_id for e in events],
    )


async def stored_events(connection: asyncpg.Connection, account: str, since: datetime | None) -> list[StoredEvent]:
    rows = await connection.fetch(
        """SELECT id, type, object_id, payload FROM simulator.events
            WHERE account = $1 AND ($2::timestamptz IS NULL OR created_at >= $2) ORDER BY created_at, id""",
        account,
        since,
    )
    return [_stored_event(row) for row in rows]


async def stored_event(connection: asyncpg.Connection, account: str, event_id: str) -> StoredEvent | None:
    row = await connection.fetchrow(
        "SELECT id, type, object_id, payload FROM simulator.events WHERE account = $1 AND id = $2", account, event_id
    )
    return None if row is None else _stored_event(row)


def _stored_event(row: asyncpg.Record) -> StoredEvent:
    return StoredEvent(row["id"], row["type"], row["object_id"], row["payload"].encode())
