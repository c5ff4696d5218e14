"""Helpers every handler uses: authentication (the bearer token), the client address, reading a JSON body."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from aiohttp import web

from engine.api.errors import ApiError
from engine.api.state import KEYS, SETTINGS
from engine.api.validation import parse_json_object
from engine.audit import Actor
from engine.keys import ApiKey, Role, authenticate, require_role
from toolkit.times import parse_day, parse_instant


def bearer_token(request: web.Request) -> str | None:
    """The secret of ``Authorization: Bearer <secret>``, or ``None`` when the header is absent or of another kind."""
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return None
    return secret.strip()


def actor(request: web.Request, key: ApiKey) -> Actor:
    """Who acts, for the audit trail: the key, from the client's address."""
    return Actor(f"key:{key.id}", client_ip(request))


async def authorized(request: web.Request, *roles: Role) -> ApiKey:
    """The request's key, if it has one of ``roles``; otherwise a 401 or 403 (via ``engine.api.errors``)."""
    key = await authenticate(request.app[KEYS], bearer_token(request))
    require_role(key, *roles)
    return key


def client_ip(request: web.Request) -> str | None:
    """The donor's address: the peer's, or with N trusted proxy hops the N-th ``X-Forwarded-For`` entry from the right.

    Each trusted proxy appends the address it saw, so only the rightmost N entries were written by someone we
    trust; everything to their left is whatever the client sent and is never read. A header with fewer entries than
    hops, or an entry that is not an IP address, falls back to the peer address."""
    hops = request.app[SETTINGS].forwarded_hops
    if hops:
        # Several X-Forwarded-For headers are one list, in order (RFC 9110 field lines).
        entries = [e.strip() for line in request.headers.getall("X-Forwarded-For", []) for e in line.split(",")]
        if len(entries) >= hops:
            address = ip_address_of(entries[-hops])
            if address is not None:
                return address
    return request.remote


def ip_address_of(entry: str) -> str | None:
    """An X-Forwarded-For entry as a normalised IP address (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``), else None."""
    if entry.startswith("[") and "]" in entry:
        entry = entry[1 : entry.index("]")]
    elif entry.count(":") == 1:
        entry = entry.partition(":")[0]
    try:
        address = ipaddress.ip_address(entry)
    except ValueError:
        return None
    # A zone (fe80::1%eth0) names an interface of the proxy's host, not a donor; PostgreSQL's inet refuses it too.
    return None if getattr(address, "scope_id", None) else str(address)


async def json_body(request: web.Request, *, allow_empty: bool = False) -> dict[str, Any]:
    body = await request.read()
    if not body.strip() and allow_empty:
        return {}
    return parse_json_object(body)


def parse_time(value: Any, name: str) -> datetime:
    """An ISO 8601 time with a time zone (``toolkit.times.parse_instant``), or a 400 naming the parameter."""
    try:
        return parse_instant(value)
    except ValueError:
        raise ApiError(
            400, "parameter_invalid", f"{name} must be an ISO 8601 time with a time zone", param=name
        ) from None


def parse_date(value: str, name: str) -> date:
    """An ISO 8601 date (``toolkit.times.parse_day``), or a 400 naming the parameter."""
    try:
        return parse_day(value)
    except ValueError:
        raise ApiError(400, "parameter_invalid", f"{name} must be a date, YYYY-MM-DD", param=name) from None


@dataclass(frozen=True, slots=True)
class PageLimit:
    """A list's ``?limit=``: its default and its maximum, read by the handler (:func:`limit_param`) and stated by
    ``/openapi.json`` from the same constant, so that the two cannot drift."""

    default: int
    maximum: int

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": 1, "maximum": self.maximum, "default": self.default}


DONATIONS_LIMIT = PageLimit(100, 1000)
ACCOUNT_ENTRIES_LIMIT = PageLimit(100, 1000)
AUDIT_EVENTS_LIMIT = PageLimit(50, 500)
RECONCILIATIONS_LIMIT = PageLimit(50, 500)
RECONCILIATION_EXCEPTIONS_LIMIT = PageLimit(500, 5000)
RECURRING_PLANS_LIMIT = PageLimit(100, 1000)
RECURRING_NOTICES_LIMIT = PageLimit(100, 1000)


def limit_param(request: web.Request, limit: PageLimit) -> int:
    return int_param(request, "limit", limit.default, 1, limit.maximum)


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:  # isdigit alone takes "²"
        raise ApiError(400, "parameter_invalid", f"{name} must be an integer {low}-{high}", param=name)
    return int(raw)
