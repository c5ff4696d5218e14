"""Campaigns: who a donation is for, in which currency, under which per-donor election limit and intake rules."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

import asyncpg
import msgspec
import orjson
from msgspec import Meta, Struct

from engine import chart_of_accounts
from engine.validation import INTEGER_MAX, Unknown, Wording, decode, invalid_only
from ledger.currencies import MINOR_UNIT_EXPONENTS

FEDERAL_LIMIT_PER_ELECTION_MINOR = 350_000  # US federal individual limit for 2025-26: $3,500 per election
ITEMIZATION_THRESHOLD_MINOR = 20_000  # FEC: employer and occupation past $200 aggregate
CAMPAIGN_CACHE_TTL_S = 10.0
PAGE_TEXT_LENGTH_MAX = 2_000
PAGE_PRESETS_MAX = 8
PAGE_ATTESTATIONS_MAX = 10
PAGE_AMOUNT_MAX = 100_000_000  # engine.pipeline.donation_request.AMOUNT_MINOR_MAX (not imported: no cycle)

# The usual attestations of a US federal campaign's contribution form (FEC: 52 U.S.C. 30118, 30119, 30121, 30122).
POLITICAL_ATTESTATIONS = (
    "I am a U.S. citizen or a lawfully admitted permanent resident (green card holder).",
    "This contribution is made from my own funds, and funds are not being provided to me by another person or "
    "entity for the purpose of making this contribution.",
    "I am making this contribution with my own personal card, not a corporate or business card or a card issued "
    "to another person.",
    "I am not a federal contractor.",
    "I am at least eighteen years old.",
)
BEST_EFFORTS_NOTICE = (
    "Federal law requires us to use our best efforts to collect and report the name, mailing address, occupation "
    "and name of employer of individuals whose contributions exceed $200 in an election cycle."
)
NOT_TAX_DEDUCTIBLE_NOTICE = (
    "Contributions to political campaigns are not tax deductible for federal income tax purposes."
)

PageText = Annotated[str, Meta(max_length=PAGE_TEXT_LENGTH_MAX)]


class PageSettings(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The donation page's settings (``GET /donate/{campaign}``), part of a campaign's declaration as ``page``.

    ``kind`` decides the notices: a political campaign's page says its gifts are not tax deductible and shows the
    best-efforts notice for employer and occupation. ``challenge``: ``always`` asks every donor for the challenge
    (hCaptcha / Turnstile); ``auto`` asks once the campaign's recent decline ratio reaches
    ``challenge_decline_ratio`` (engine.pipeline.challenge); ``never`` leaves it to per-source velocity alone."""

    kind: Literal["political", "nonprofit"] = "political"
    presets: Annotated[
        list[Annotated[int, Meta(ge=1, le=PAGE_AMOUNT_MAX)]], Meta(min_length=1, max_length=PAGE_PRESETS_MAX)
    ] = msgspec.field(default_factory=lambda: [1_000, 2_500, 5_000, 10_000, 25_000])
    heading: PageText = ""  # empty: the campaign's name
    intro: PageText = ""
    attestations: Annotated[list[Annotated[str, Meta(min_length=1, max_length=500)]], Meta(max_length=10)] = (
        msgspec.field(default_factory=lambda: list(POLITICAL_ATTESTATIONS))
    )
    best_efforts_notice: PageText = BEST_EFFORTS_NOTICE
    tax_notice: PageText = NOT_TAX_DEDUCTIBLE_NOTICE  # shown for political campaigns only
    stripe_publishable_key: Annotated[str, Meta(pattern=r"^pk_(test|live)_[A-Za-z0-9]{1,200}$")] | None = None
    challenge: Literal["always", "auto", "never"] = "auto"
    challenge_decline_ratio: Annotated[float, Meta(gt=0, le=1)] = 0.5
    challenge_window_s: Annotated[int, Meta(ge=60, le=3_600)] = 300
    challenge_sample_min: Annotated[int, Meta(ge=1, le=1_000)] = 20  # decided attempts before "auto" may switch on

    wording: ClassVar[dict[str, Wording]] = {
        "kind": invalid_only("page.kind must be political or nonprofit."),
        "presets": invalid_only(f"page.presets must be 1 to {PAGE_PRESETS_MAX} positive amounts (minor units)."),
        "heading": invalid_only(f"page.heading must be a str of at most {PAGE_TEXT_LENGTH_MAX} characters."),
        "intro": invalid_only(f"page.intro must be a str of at most {PAGE_TEXT_LENGTH_MAX} characters."),
        "attestations": invalid_only(
            f"page.attestations must be at most {PAGE_ATTESTATIONS_MAX} texts of 1 to 500 characters."
        ),
        "best_efforts_notice": invalid_only(f"page.best_efforts_notice must be at most {PAGE_TEXT_LENGTH_MAX} chars."),
        "tax_notice": invalid_only(f"page.tax_notice must be at most {PAGE_TEXT_LENGTH_MAX} characters."),
        "stripe_publishable_key": invalid_only(
            "page.stripe_publishable_key must be a Stripe publishable key (pk_test_… or pk_live_…)."
        ),
        "challenge": invalid_only("page.challenge must be always, auto or never."),
        "challenge_decline_ratio": invalid_only("page.challenge_decline_ratio must be above 0 and at most 1."),
        "challenge_window_s": invalid_only("page.challenge_window_s must be 60-3600 seconds."),
        "challenge_sample_min": invalid_only("page.challenge_sample_min must be 1-1000."),
    }
    unknown: ClassVar[Unknown | None] = Unknown("parameter_unknown", "Unknown page setting: {name}.")

    def as_json(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)


class ReceiptSettings(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the campaign's receipts say beyond the defaults (engine/receipts/), part of its declaration as
    ``receipt``: its own legal text instead of the one for its ``page.kind``, and whole Jinja2 templates (rendered in
    a sandbox). The bounds are surge.campaigns' CHECK constraints."""

    legal_text: Annotated[str, Meta(min_length=1, max_length=4_000)] | None = None
    text_template: Annotated[str, Meta(min_length=1, max_length=20_000)] | None = None
    html_template: Annotated[str, Meta(min_length=1, max_length=50_000)] | None = None

    wording: ClassVar[dict[str, Wording]] = {
        "legal_text": invalid_only("receipt.legal_text must be 1 to 4000 characters."),
        "text_template": invalid_only("receipt.text_template must be 1 to 20000 characters."),
        "html_template": invalid_only("receipt.html_template must be 1 to 50000 characters."),
    }
    unknown: ClassVar[Unknown | None] = Unknown("parameter_unknown", "Unknown receipt setting: {name}.")


def page_settings_from_json(document: dict[str, Any] | str | None) -> PageSettings:
    """Stored settings (jsonb, as text or decoded) → PageSettings; defaults fill what is absent."""
    if isinstance(document, str):
        document = orjson.loads(document)
    return msgspec.convert(document or {}, PageSettings)


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
    page: PageSettings = field(default_factory=PageSettings)
    receipt: ReceiptSettings = field(default_factory=ReceiptSettings)

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
            "page": self.page.as_json(),
            "receipt": msgspec.to_builtins(self.receipt),
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
    page: PageSettings = msgspec.field(default_factory=PageSettings)
    receipt: ReceiptSettings = msgspec.field(default_factory=ReceiptSettings)

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
        "page": invalid_only("page must be an object of donation page settings."),
        "receipt": invalid_only("receipt must be an object of receipt settings."),
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
        page=settings.page,
        receipt=settings.receipt,
    )


class CampaignExistsError(Exception):
    pass


async def create_campaign(connection: asyncpg.Connection, campaign: Campaign) -> Campaign:
    async with connection.transaction():
        try:
            await connection.execute(
                """INSERT INTO surge.campaigns (slug, name, currency, election, contribution_limit_minor,
                       itemization_threshold_minor, require_attestation, allowed_origins, page_settings,
                       receipt_legal_text, receipt_text_template, receipt_html_template)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::jsonb, $10, $11, $12)""",
                campaign.slug,
                campaign.name,
                campaign.currency,
                campaign.election,
                campaign.contribution_limit_minor,
                campaign.itemization_threshold_minor,
                campaign.require_attestation,
                list(campaign.allowed_origins),
                msgspec.json.encode(campaign.page).decode(),
                campaign.receipt.legal_text,
                campaign.receipt.text_template,
                campaign.receipt.html_template,
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
        page=page_settings_from_json(row["page_settings"]),
        receipt=ReceiptSettings(
            legal_text=row["receipt_legal_text"],
            text_template=row["receipt_text_template"],
            html_template=row["receipt_html_template"],
        ),
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
