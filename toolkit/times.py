"""The one time parser: instants need an explicit zone, days are calendar dates.

A time without a zone would be read in whatever zone the server or the operator's shell happens to be in, silently;
so :func:`parse_instant` refuses it (``Z`` or an offset such as ``+02:00`` is required). Days are ISO dates and
stand for whole UTC days where a window is needed (:func:`day_start`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time


def parse_instant(value: str) -> datetime:
    """An ISO 8601 time with a time zone, e.g. ``2026-03-01T12:00:00Z``; raises ``ValueError`` otherwise."""
    if not isinstance(value, str):
        raise ValueError(f"not an ISO 8601 time: {value!r}")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"an ISO 8601 time needs a time zone (Z or +hh:mm): {value!r}")
    return parsed


def parse_day(value: str) -> date:
    """An ISO 8601 calendar date, ``YYYY-MM-DD``; raises ``ValueError`` otherwise."""
    if not isinstance(value, str):
        raise ValueError(f"not a date: {value!r}")
    return date.fromisoformat(value)


def day_start(day: date) -> datetime:
    """The first instant of ``day`` in UTC."""
    return datetime.combine(day, time(0), UTC)
