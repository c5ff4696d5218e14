"""Signed, expiring links for donors: Quick Donate (one-tap gift on a saved method), managing a plan (cancel, change
the amount) and the donor profile (saved methods, proven by the email the link was sent to). No passwords.

A link's token is ``<payload>.<signature>``: the payload is base64url JSON with the link's kind, its fields and its
expiry (epoch seconds); the signature is HMAC-SHA256 over the kind-bound payload with the engine's link key. A
changed byte or another kind's token fails verification; an expired one is refused as expired. Built on the
standard library's ``hmac`` rather than a package such as ``itsdangerous``: it is the same construction in thirty
lines, with no dependency (and no shared lock file change) for it.

The key is ``SURGE_RECURRING_LINK_SECRET`` when set, else one made once in ``surge.link_signing_keys`` and shared by
every engine process on the database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from enum import StrEnum
from typing import Any

import asyncpg
import orjson

TOKEN_LENGTH_MAX = 2_000
# A manage link rides in the email of every installment: it lives past the next monthly one.
MANAGE_LINK_TTL_S = 45 * 24 * 3600


class LinkKind(StrEnum):
    QUICK_DONATE = "quick"  # fields: link (id), method, campaign, amount, refcode
    MANAGE_PLAN = "plan"  # fields: plan
    PROFILE = "profile"  # fields: profile, email


class LinkRefusal(StrEnum):
    MALFORMED = "malformed"
    TAMPERED = "tampered"  # the signature does not match: changed, or signed by another key, or another kind
    EXPIRED = "expired"


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("a link key needs at least 32 bytes")
        self._secret = secret

    def _signature(self, kind: LinkKind, payload: str) -> str:
        message = f"surge-link-v1.{kind.value}.{payload}".encode()
        return _encode(hmac.new(self._secret, message, hashlib.sha256).digest())

    def sign(self, kind: LinkKind, fields: dict[str, Any], ttl_s: float, now_s: float | None = None) -> str:
        expires = int((time.time() if now_s is None else now_s) + ttl_s)
        payload = _encode(orjson.dumps({**fields, "exp": expires}))
        return f"{payload}.{self._signature(kind, payload)}"

    def verify(self, kind: LinkKind, token: str, now_s: float | None = None) -> dict[str, Any] | LinkRefusal:
        """The link's fields, or why it is refused. The signature is compared in constant time before the payload
        is even parsed: nothing of an unsigned payload is read."""
        if len(token) > TOKEN_LENGTH_MAX or token.count(".") != 1:
            return LinkRefusal.MALFORMED
        payload, signature = token.split(".")
        if not hmac.compare_digest(signature, self._signature(kind, payload)):
            return LinkRefusal.TAMPERED
        try:
            fields = orjson.loads(_decode(payload))
        except (ValueError, orjson.JSONDecodeError):
            return LinkRefusal.MALFORMED
        if not isinstance(fields, dict) or not isinstance(fields.get("exp"), int):
            return LinkRefusal.MALFORMED
        if fields["exp"] < (time.time() if now_s is None else now_s):
            return LinkRefusal.EXPIRED
        return fields


def link_id_of(token: str) -> str:
    """A stable id for a link (its signature's digest): a Quick Donate gift's idempotency key derives from it."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


async def link_signer(pool: asyncpg.Pool, configured: str | None) -> LinkSigner:
    if configured:
        return LinkSigner(configured.encode())
    await pool.execute(
        "INSERT INTO surge.link_signing_keys (id, secret) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
        secrets.token_bytes(32),
    )
    secret: bytes = await pool.fetchval("SELECT secret FROM surge.link_signing_keys WHERE id = 1")
    return LinkSigner(secret)
