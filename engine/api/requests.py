"""Helpers every handler uses: authentication (the bearer token), the client address, reading a JSON body."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from aiohttp import web

from engine.api.errors import ApiError
from engine.api.state import KEYS, SETTINGS
from engine.api.validation import parse_json_object
from engine.keys import ApiKey, Role, authenticate, require_role
from toolkit.times import parse_day, parse_instant


def bearer_token(request: web.Request) -> str | None:
    """The secret of ``Authorization: Bearer <secret>``, or ``None`` when the header is absent or of another kind."""
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return None
    return secret.strip()


async def authorized(request: web.Request, *roles: Role) -> ApiKey:
    """The request's key, if it has one of ``roles``; otherwise a 401 or 403 (via ``engine.api.errors``)."""
    key = await authenticate(request.app[KEYS], bearer_token(request))
    require_role(key, *roles)
    return key


def client_ip(request: web.Request) -> str | None:
    if request.app[SETTINGS].trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For")
        if forwarded:
            return forwarded.split(",")[0].strip() or None
    return request.remote


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


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:  # isdigit alone takes "²"
        raise ApiError(400, "parameter_invalid", f"{name} must be an integer {low}-{high}", param=name)
    return int(raw)
