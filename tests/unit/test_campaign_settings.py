"""A campaign's settings are declared once (engine.campaigns.CampaignCreate) and checked by decoding, for the API
and the CLI alike."""

from __future__ import annotations

from typing import Any

import pytest

from engine.campaigns import FEDERAL_LIMIT_PER_ELECTION_MINOR, Campaign, campaign_from_json
from engine.validation import ValidationProblem

BASE: dict[str, Any] = {"slug": "spring-push", "name": "Spring push", "election": "2026-general"}


def test_defaults_and_normalised_currency() -> None:
    campaign = campaign_from_json({**BASE, "currency": "bhd", "allowed_origins": ["https://example.org"]})
    assert campaign == Campaign(
        slug="spring-push",
        name="Spring push",
        currency="BHD",
        election="2026-general",
        contribution_limit_minor=FEDERAL_LIMIT_PER_ELECTION_MINOR,
        allowed_origins=("https://example.org",),
    )


@pytest.mark.parametrize(
    ("change", "param", "message"),
    [
        ({"slug": "Spring Push"}, "slug", "slug must be lower-case letters, digits and dashes."),
        ({"currency": "ZZZ"}, "currency", "currency must be an ISO 4217 code."),
        ({"currency": "US"}, "currency", "currency must be an ISO 4217 code."),
        (
            {"contribution_limit": 0},
            "contribution_limit",
            "contribution_limit must be a positive integer (minor units).",
        ),
        (
            {"contribution_limit": True},
            "contribution_limit",
            "contribution_limit must be a positive integer (minor units).",
        ),
        (
            {"itemization_threshold": -1},
            "itemization_threshold",
            "itemization_threshold must be a positive integer (minor units).",
        ),
        ({"allowed_origins": ["example.org"]}, "allowed_origins", "allowed_origins must be a list of origins."),
        ({"require_attestation": "yes"}, "require_attestation", "require_attestation must be true or false."),
        ({"name": None}, "name", "name must be a str."),
    ],
)
def test_each_rule_names_its_parameter(change: dict[str, Any], param: str, message: str) -> None:
    with pytest.raises(ValidationProblem) as refused:
        campaign_from_json({**BASE, **change})
    assert (refused.value.param, refused.value.code, refused.value.message) == (param, "parameter_invalid", message)


def test_unknown_fields_are_ignored_so_a_read_campaign_can_be_posted_back() -> None:
    campaign = campaign_from_json({**BASE, "object": "campaign", "currency": "USD"})
    assert campaign_from_json({**campaign.as_json(), "slug": "copy"}).name == "Spring push"
