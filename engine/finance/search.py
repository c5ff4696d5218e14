"""Finding donations: what finance types in one search box, with a campaign, an amount and a date range beside it.

The box is read for what it looks like — a donation id (``don_…``), an email (has ``@``), a postal code (starts with
a digit), a processor reference (``pi_…``, ``ch_…``, ``sim_…``, anything else with an underscore and no space), or
else a donor name ("Lovelace", "ada lovelace": last name prefix, then first name). Results come newest first in
pages keyed by (created_at, id), so page 1,000 costs what page 1 does, each search reading one index
(migration 0022).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from engine.pipeline.donations import DONATION_COLUMNS, Donation

PAGE_SIZE_MAX = 200
_REFERENCE = re.compile(r"^[A-Za-z]+_[A-Za-z0-9_]+$")


@dataclass(frozen=True, slots=True)
class DonationSearch:
    text: str | None = None
    campaign: str | None = None
    refcode: str | None = None
    amount_minor: int | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None  # exclusive


@dataclass(frozen=True, slots=True)
class Page:
    donations: list[Donation]
    next_after: str | None  # the id to continue after, when there may be more


def _text_filter(text: str) -> tuple[str, list[str]]:
    """The SQL condition that the search box's text means, its values as ``{0}``, ``{1}`` (numbered by the caller)."""
    text = text.strip()
    if text.startswith("don_"):
        return "id = {0}", [text]
    if "@" in text:
        return "lower(donor ->> 'email') = lower({0})", [text]
    if text[:1].isdigit():
        return "(donor ->> 'postal_code') LIKE {0}", [_prefix(text)]
    if _REFERENCE.match(text):
        return "processor_reference = {0}", [text]
    first, _, last = text.rpartition(" ")
    if not first:
        return "lower(donor ->> 'last_name') LIKE {0}", [_prefix(last.lower())]
    condition = "lower(donor ->> 'last_name') LIKE {0} AND lower(donor ->> 'first_name') LIKE {1}"
    return condition, [_prefix(last.lower()), _prefix(first.lower())]


def _prefix(text: str) -> str:
    return re.sub(r"([\\%_])", r"\\\1", text) + "%"


async def search_donations(
    connection: asyncpg.Connection | asyncpg.Pool, search: DonationSearch, *, limit: int = 50, after: str | None = None
) -> Page:
    condition, values = _text_filter(search.text) if search.text and search.text.strip() else ("true", [])
    condition = condition.format(*(f"${8 + i}" for i in range(len(values))))
    limit = max(1, min(limit, PAGE_SIZE_MAX))
    rows = await connection.fetch(
        f"""SELECT {DONATION_COLUMNS} FROM surge.donations
             WHERE ({condition})
               AND ($1::text IS NULL OR campaign = $1)
               AND ($2::bigint IS NULL OR amount_minor = $2)
               AND ($3::timestamptz IS NULL OR created_at >= $3)
               AND ($4::timestamptz IS NULL OR created_at < $4)
               AND ($5::text IS NULL OR (created_at, id) < (SELECT created_at, id FROM surge.donations WHERE id = $5))
               AND ($7::text IS NULL OR refcode = $7)
             ORDER BY created_at DESC, id DESC LIMIT $6""",
        search.campaign,
        search.amount_minor,
        search.created_from,
        search.created_to,
        after,
        limit + 1,  # one more than the page: whether there is a next one
        search.refcode,
        *values,
    )
    donations = [Donation.from_row(row) for row in rows[:limit]]
    return Page(donations, donations[-1].id if len(rows) > limit else None)
