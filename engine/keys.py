"""API keys with roles, sent as ``Authorization: Bearer <key>``.

Keys are 32 random bytes, so a plain SHA-256 of the key is as good as a slow password hash and costs microseconds;
only the hash is stored. Verified keys are cached per process for a short time so that a deadline-night stream of
form posts does not pay a database round trip for each; revocation takes effect within that time.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum

import asyncpg

KEY_CACHE_TTL_S = 30.0


class Role(StrEnum):
    FORM = "form"  # publishable: create donations and read the ones it created
    FINANCE = "finance"  # read the ledger, reports, reconciliation
    ADMIN = "admin"  # everything, including campaigns and keys


_PREFIX = {Role.FORM: "pk_", Role.FINANCE: "sk_fin_", Role.ADMIN: "sk_adm_"}


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    role: Role


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


async def create_key(connection: asyncpg.Connection, role: Role, label: str | None = None) -> tuple[ApiKey, str]:
    """Create a key; returns it with its secret, which is shown once and never stored."""
    key_id = "key_" + secrets.token_hex(8)
    secret = _PREFIX[role] + secrets.token_urlsafe(32)
    await connection.execute(
        "INSERT INTO surge.api_keys (id, secret_hash, role, label) VALUES ($1, $2, $3, $4)",
        key_id,
        _hash(secret),
        role.value,
        label,
    )
    return ApiKey(key_id, role), secret


class KeyVerifier:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._cache: dict[bytes, tuple[ApiKey | None, float]] = {}

    async def verify(self, secret: str) -> ApiKey | None:
        digest = _hash(secret)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        row = await self._pool.fetchrow(
            "SELECT id, role FROM surge.api_keys WHERE secret_hash = $1 AND revoked_at IS NULL", digest
        )
        key = ApiKey(row["id"], Role(row["role"])) if row else None
        if len(self._cache) > 10_000:  # bounded: unknown keys from a scanner must not grow memory forever
            self._cache.clear()
        self._cache[digest] = (key, now + KEY_CACHE_TTL_S)
        return key


class KeyProblem(StrEnum):
    MISSING = "missing"  # no key was presented
    INVALID = "invalid"  # unknown or revoked


class KeyRefusedError(Exception):
    def __init__(self, problem: KeyProblem) -> None:
        super().__init__(problem.value)
        self.problem = problem


class RoleRefusedError(Exception):
    """A valid key whose role may not do this."""

    def __init__(self, role: Role, roles_needed: tuple[Role, ...]) -> None:
        super().__init__(f"role {role.value} is not one of {', '.join(r.value for r in roles_needed)}")
        self.role = role
        self.roles_needed = roles_needed


async def authenticate(verifier: KeyVerifier, secret: str | None) -> ApiKey:
    """The key for a presented secret (``None`` when none was presented); raises :class:`KeyRefusedError`."""
    if secret is None or not secret.strip():
        raise KeyRefusedError(KeyProblem.MISSING)
    key = await verifier.verify(secret.strip())
    if key is None:
        raise KeyRefusedError(KeyProblem.INVALID)
    return key


def require_role(key: ApiKey, *roles: Role) -> None:
    if key.role is not Role.ADMIN and key.role not in roles:
        raise RoleRefusedError(key.role, roles)


async def revoke_key(connection: asyncpg.Connection, key_id: str) -> bool:
    """Revoke a key: refused from now on by every process once its cached verification expires
    (``KEY_CACHE_TTL_S``), and its dashboard sessions end at once. True when this call revoked it."""
    revoked = await connection.fetchval(
        "UPDATE surge.api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING true", key_id
    )
    return bool(revoked)


async def list_keys(connection: asyncpg.Connection | asyncpg.Pool) -> list[dict[str, object]]:
    """Every key's id, role, label and dates (never a secret: only its hash is stored)."""
    rows = await connection.fetch(
        "SELECT id, role, label, created_at, revoked_at FROM surge.api_keys ORDER BY created_at, id"
    )
    return [
        {
            "object": "api_key",
            "id": row["id"],
            "role": row["role"],
            "label": row["label"],
            "created": row["created_at"].isoformat(),
            "revoked": row["revoked_at"].isoformat() if row["revoked_at"] else None,
        }
        for row in rows
    ]
