"""Campaigns: who a donation is for, in which currency, under which per-donor election limit and intake rules."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

import asyncpg
from msgspec import Meta, Struct

from engine import chart_of_accounts
from engine.validation import INTEGER_MAX, Unknown, Wording, decode, invalid_only
from ledger.currencies import MINOR_UNIT_EXPONENTS

FEDERAL_LIMIT_PER_ELECTION_MINOR = 350_000  # US federal individual limit for 2025-26: $3,500 per election
ITEMIZATION_THRESHOLD_MINOR = 20_000  # FEC: employer and occupation past $200 aggregate
CAMPAIGN_CACHE_TTL_S = 10.0


@dataclass(frozen=True, slots=True)
class Campaign:
    slug: str
    name: str
    currency: str
    election: str
    contribution_limit_minor: int = FEDERAL_LIMIT_PER_ELECTION_MINOR
    itemization_threshold_minor: int = ITEMIZATION_THRESHOLD_MINOR
    require_attestation: bool = True
    allowed_origins: tuple[str, ...] = field(default_factory=tuple)

    def as_json(self) -> dict[str, Any]:
        return {
            "object": "campaign",
            "slug": self.slug,
            "name": self.name,
            "currency": self.currency,
            "election": self.election,
            "contribution_limit": self.contribution_limit_minor,
            "itemization_threshold": self.itemization_threshold_minor,
            "require_attestation": self.require_attestation,
            "allowed_origins": list(self.allowed_origins),
        }


CAMPAIGN_NAME_LENGTH_MAX = 200
ELECTION_LENGTH_MAX = 100
# A campaign's currency must be one the ledger can count and the reports can format: an active ISO 4217 code
# (upper or lower case), not any three letters. A pattern rather than an enum of 360 values, which fuzzers and
# client generators would each walk value by value.
_ISO_CODES = "|".join(code for code in sorted(MINOR_UNIT_EXPONENTS) for code in (code, code.lower()))
IsoCurrency = Annotated[str, Meta(pattern=f"^(?:{_ISO_CODES})$", description="An active ISO 4217 code")]


class CampaignCreate(Struct, kw_only=True):
    """A campaign's settings as posted (API) or given as flags (CLI). Unknown fields are ignored: a campaign read
    from the API can be posted back as it is."""

    slug: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
    currency: IsoCurrency = "USD"
    allowed_origins: list[Annotated[str, Meta(pattern=r"^http")]] = []
    contribution_limit: Annotated[int, Meta(gt=0, le=INTEGER_MAX)] = FEDERAL_LIMIT_PER_ELECTION_MINOR
    itemization_threshold: Annotated[int, Meta(ge=0, le=INTEGER_MAX)] = ITEMIZATION_THRESHOLD_MINOR
    require_attestation: bool = True
    # The bounds are surge.campaigns' CHECK constraints: a longer or empty name must be a 400, not a 500.
    name: Annotated[str, Meta(min_length=1, max_length=CAMPAIGN_NAME_LENGTH_MAX)]
    election: Annotated[str, Meta(min_length=1, max_length=ELECTION_LENGTH_MAX)]

    wording: ClassVar[dict[str, Wording]] = {
        "slug": Wording(invalid="slug must be a str.", pattern="slug must be lower-case letters, digits and dashes."),
        "currency": invalid_only("currency must be an ISO 4217 code."),
        "allowed_origins": invalid_only("allowed_origins must be a list of origins."),
        "contribution_limit": invalid_only("contribution_limit must be a positive integer (minor units)."),
        "itemization_threshold": invalid_only("itemization_threshold must be a positive integer (minor units)."),
        "require_attestation": invalid_only("require_attestation must be true or false."),
        "name": Wording(
            invalid="name must be a str.",
            too_short="name must not be empty.",
            too_long=f"name must be at most {CAMPAIGN_NAME_LENGTH_MAX} characters.",
        ),
        "election": Wording(
            invalid="election must be a str.",
            too_short="election must not be empty.",
            too_long=f"election must be at most {ELECTION_LENGTH_MAX} characters.",
        ),
    }
    unknown: ClassVar[Unknown | None] = None


def campaign_from_json(body: dict[str, Any]) -> Campaign:
    """The campaign ``body`` describes (the API's body, or the CLI's flags as one), or its first ValidationProblem."""
    settings = decode(body, CampaignCreate)
    currency = settings.currency.upper()
    return Campaign(
        slug=settings.slug,
        name=settings.name,
        currency=currency,
        election=settings.election,
        contribution_limit_minor=settings.contribution_limit,
        itemization_threshold_minor=settings.itemization_threshold,
        require_attestation=settings.require_attestation,
        allowed_origins=tuple(settings.allowed_origins),
    )


class CampaignExistsError(Exception):
    pass


async def create_campaign(connection: asyncpg.Connection, campaign: Campaign) -> Campaign:
    async with connection.transaction():
        try:
            await connection.execute(
                """INSERT INTO surge.campaigns (slug, name, currency, election, contribution_limit_minor,
                       itemization_threshold_minor, require_attestation, allowed_origins)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
                campaign.slug,
                campaign.name,
                campaign.currency,
                campaign.election,
                campaign.contribution_limit_minor,
                campaign.itemization_threshold_minor,
                campaign.require_attestation,
                list(campaign.allowed_origins),
            )
        except asyncpg.UniqueViolationError:
            raise CampaignExistsError(campaign.slug) from None
        await chart_of_accounts.ensure_campaign_accounts(connection, campaign.slug, campaign.currency)
    return campaign


def _campaign(row: asyncpg.Record) -> Campaign:
    return Campaign(
        slug=row["slug"],
        name=row["name"],
        currency=row["currency"],
        election=row["election"],
        contribution_limit_minor=row["contribution_limit_minor"],
        itemization_threshold_minor=row["itemization_threshold_minor"],
        require_attestation=row["require_attestation"],
        allowed_origins=tuple(row["allowed_origins"]),
    )


async def list_campaigns(connection: asyncpg.Connection | asyncpg.Pool) -> list[Campaign]:
    rows = await connection.fetch("SELECT * FROM surge.campaigns ORDER BY slug")
    return [_campaign(row) for row in rows]


class CampaignDirectory:
    """Slug → campaign, refreshed every few seconds: intake reads it on every request."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._by_slug: dict[str, Campaign] = {}
        self._fresh_until = 0.0

    async def get(self, slug: str) -> Campaign | None:
        now = time.monotonic()
        if now >= self._fresh_until or slug not in self._by_slug:
            if slug not in self._by_slug and now < self._fresh_until - CAMPAIGN_CACHE_TTL_S + 1.0:
                return None  # unknown slugs do not trigger more than one reload a second
            self._by_slug = {c.slug: c for c in await list_campaigns(self._pool)}
            self._fresh_until = now + CAMPAIGN_CACHE_TTL_S
        return self._by_slug.get(slug)

    async def all(self) -> list[Campaign]:
        if time.monotonic() >= self._fresh_until:
            self._by_slug = {c.slug: c for c in await list_campaigns(self._pool)}
            self._fresh_until = time.monotonic() + CAMPAIGN_CACHE_TTL_S
        return list(self._by_slug.values())
