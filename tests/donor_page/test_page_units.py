"""The donation page's pure parts, without I/O: the simulated tokenizer's card table and checks, the page's amount
parsing, its Content-Security-Policy, and the page settings of a campaign's declaration."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from adapters.simulated.tokenizer import TEST_CARD_TOKENS, CardError, tokenize_card
from adapters.simulated.tokens import KNOWN_TOKENS, CardBehaviour
from engine.campaigns import POLITICAL_ATTESTATIONS, Campaign, PageSettings, campaign_from_json, page_settings_from_json
from engine.donor_page.render import PageConfig, content_security_policy, page_values, parse_amount
from engine.validation import ValidationProblem

TODAY = date(2026, 12, 3)
BASE: dict[str, Any] = {"slug": "smith", "name": "Smith", "election": "2026-general"}


def luhn_valid(number: str) -> bool:
    digits = [int(d) for d in reversed(number)]
    return sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(digits)) % 10 == 0


@pytest.mark.parametrize(("number", "token"), sorted(TEST_CARD_TOKENS.items()))
def test_every_test_card_is_a_valid_number_and_a_token_the_simulator_knows(number: str, token: str) -> None:
    assert luhn_valid(number), number
    assert token in KNOWN_TOKENS
    assert tokenize_card(number, "12", "30", "123", TODAY) == token


def test_the_stripe_test_cards_behave_as_stripe_documents() -> None:
    def behaviour(number: str) -> CardBehaviour:
        return KNOWN_TOKENS[TEST_CARD_TOKENS[number]].behaviour

    assert behaviour("4242424242424242") is CardBehaviour.SUCCEED
    assert behaviour("4000000000000002") is CardBehaviour.DECLINE
    assert KNOWN_TOKENS[TEST_CARD_TOKENS["4000000000009995"]].decline_code == "insufficient_funds"
    assert behaviour("4000002500003155") is CardBehaviour.REQUIRE_ACTION


def test_the_tokenizer_refuses_what_stripe_refuses() -> None:
    assert tokenize_card("4242-4242 4242-4242", "1", "2030", "1234", TODAY) == "pm_card_visa"
    assert tokenize_card("4242424242424242", "12", "26", "123", TODAY) == "pm_card_visa"  # this month still counts

    def code(*card: str) -> str:
        refused = tokenize_card(*card, TODAY)
        assert isinstance(refused, CardError)
        return refused.code

    assert code("4242424242424243", "12", "30", "123") == "incorrect_number"
    assert code("42424242", "12", "30", "123") == "incorrect_number"
    fullwidth = "".join(chr(0xFF10 + int(digit)) for digit in "4242424242424242")  # other scripts' digits
    assert code(fullwidth, "12", "30", "123") == "incorrect_number"
    assert code("4111111111111111", "12", "30", "123") == "card_declined"  # valid, but not a test card
    assert code("4242424242424242", "0", "30", "123") == "invalid_expiry_month"
    assert code("4242424242424242", "11", "26", "123") == "invalid_expiry_year"
    assert code("4242424242424242", "12", "230", "123") == "invalid_expiry_year"
    assert code("4242424242424242", "12", "30", "12a") == "invalid_cvc"


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("25", "USD", 2_500),
        ("25.5", "USD", 2_550),
        (" 25.05 ", "USD", 2_505),
        ("25.505", "USD", None),
        ("0", "USD", None),
        ("-5", "USD", None),
        ("1e3", "USD", None),
        ("1000001", "USD", None),  # above the API's largest amount
        ("500", "JPY", 500),
        ("500.5", "JPY", None),
        ("1.234", "BHD", 1_234),
        ("", "USD", None),
        (None, "USD", None),
    ],
)
def test_amounts_from_the_link(text: str | None, currency: str, minor: int | None) -> None:
    assert parse_amount(text, currency) == minor


def directives(policy: str) -> dict[str, str]:
    return dict(part.strip().split(" ", 1) for part in policy.split(";"))


def test_the_policy_opens_only_what_the_page_uses() -> None:
    campaign = Campaign("smith", "Smith", "USD", "2026", allowed_origins=("*",))
    plain = directives(content_security_policy(campaign, "simulated", None))
    assert plain["script-src"] == "'self'" and plain["frame-src"] == "'none'" and plain["frame-ancestors"] == "*"
    captcha = directives(content_security_policy(campaign, "simulated", "hcaptcha"))
    assert "https://js.hcaptcha.com" in captcha["script-src"] and "https://*.hcaptcha.com" in captcha["frame-src"]
    turnstile = directives(content_security_policy(campaign, "stripe", "turnstile"))
    assert turnstile["script-src"] == "'self' https://js.stripe.com https://challenges.cloudflare.com"
    assert "'unsafe-inline'" not in content_security_policy(campaign, "stripe", "hcaptcha")


def test_page_settings_are_part_of_the_campaigns_declaration() -> None:
    campaign = campaign_from_json(BASE)
    assert campaign.page == PageSettings() and campaign.page.attestations == list(POLITICAL_ATTESTATIONS)
    assert page_settings_from_json("{}") == PageSettings()
    declared = campaign_from_json({**BASE, "page": {"kind": "nonprofit", "presets": [500], "challenge": "always"}})
    assert page_settings_from_json(declared.page.as_json()) == declared.page  # stored and read back alike
    assert campaign_from_json(declared.as_json()).page == declared.page  # a campaign read can be posted back

    values = page_values(declared, {}, form_key="pk_x", config=PageConfig(True, None), challenge_required=True)
    assert values["tax_notice"] == "" and values["challenge"]["required"] is False  # no verifier: nothing to pass


@pytest.mark.parametrize(
    ("page", "param", "code"),
    [
        ({"presets": []}, "page.presets", "parameter_invalid"),
        ({"presets": [0]}, "page.presets", "parameter_invalid"),
        ({"kind": "party"}, "page.kind", "parameter_invalid"),
        ({"challenge": "sometimes"}, "page.challenge", "parameter_invalid"),
        ({"challenge_decline_ratio": 0}, "page.challenge_decline_ratio", "parameter_invalid"),
        ({"stripe_publishable_key": "sk_test_secret"}, "page.stripe_publishable_key", "parameter_invalid"),
        ({"attestations": [""]}, "page.attestations", "parameter_invalid"),
        ({"colour": "red"}, "page.colour", "parameter_unknown"),
        ("big", "page", "parameter_invalid"),
    ],
)
def test_bad_page_settings_are_named(page: Any, param: str, code: str) -> None:
    with pytest.raises(ValidationProblem) as raised:
        campaign_from_json({**BASE, "page": page})
    assert (raised.value.param, raised.value.code) == (param, code)
