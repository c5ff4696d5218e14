"""The audit trail: who did what, when, from where, and what changed — for every action a person takes.

People act through an API key (the API, the dashboard's session made from one) or at the command line; the actor is
``key:<id>`` or ``cli:<user>`` and the address is the client's (after the trusted proxy hops), NULL at a terminal.
A row is written inside the action's own transaction where the action has one, so an action and its record commit
or vanish together. The table is append-only (a trigger refuses UPDATE, DELETE and TRUNCATE, as for the ledger).
Reading pages newest first by id (keyset), so it stays fast however long the trail grows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg
import orjson


class AuditAction(StrEnum):
    REFUND_REQUESTED = "refund_requested"
    EXCEPTION_RESOLVED = "exception_resolved"
    RECONCILIATION_RUN = "reconciliation_run"
    KEY_CREATED = "key_created"
    KEY_REVOKED = "key_revoked"
    CAMPAIGN_CREATED = "campaign_created"
    CAMPAIGN_CHANGED = "campaign_changed"
    SIGNED_IN = "signed_in"
    SIGN_IN_REFUSED = "sign_in_refused"
    SIGNED_OUT = "signed_out"


@dataclass(frozen=True, slots=True)
class Actor:
    name: str  # key:<id> or cli:<user>
    address: str | None = None


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: int
    at: datetime
    actor: str
    address: str | None
    action: str
    subject: str | None
    changes: Mapping[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "object": "audit_event",
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "address": self.address,
            "action": self.action,
            "subject": self.subject,
            "changes": dict(self.changes),
        }


async def record(
    connection: asyncpg.Connection,
    actor: Actor,
    action: AuditAction,
    subject: str | None = None,
    changes: Mapping[str, Any] | None = None,
) -> int:
    event_id: int = await connection.fetchval(
        """INSERT INTO surge.audit_events (actor, address, action, subject, changes)
           VALUES ($1, $2::inet, $3, $4, $5::jsonb) RETURNING id""",
        actor.name,
        actor.address,
        action.value,
        subject,
        orjson.dumps(changes or {}, default=str).decode(),
    )
    return event_id


async def read(
    connection: asyncpg.Connection | asyncpg.Pool,
    *,
    limit: int = 50,
    before_id: int | None = None,
    action: str | None = None,
    subject: str | None = None,
) -> list[AuditEvent]:
    """Newest first; ``before_id`` continues a page (keyset paging)."""
    rows = await connection.fetch(
        """SELECT id, at, actor, host(address) AS address, action, subject, changes FROM surge.audit_events
            WHERE ($2::bigint IS NULL OR id < $2) AND ($3::text IS NULL OR action = $3)
              AND ($4::text IS NULL OR subject = $4)
            ORDER BY id DESC LIMIT $1""",
        limit,
        before_id,
        action,
        subject,
    )
    return [
        AuditEvent(r["id"], r["at"], r["actor"], r["address"], r["action"], r["subject"], orjson.loads(r["changes"]))
        for r in rows
    ]
