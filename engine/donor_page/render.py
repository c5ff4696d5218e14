"""The donation page's values (from the campaign, the URL and the engine's configuration), its HTML and its
Content-Security-Policy.

Everything from the URL is untrusted: prefilled donor fields are cut to the API's length, the amount and the refcode
are kept only when valid, and Jinja2's autoescape writes every value as text (attributes included).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jinja2

from engine.campaigns import Campaign
from engine.pipeline.donation_request import AMOUNT_MINOR_MAX, REFCODE_PATTERN, TEXT_LENGTH_MAX
from ledger.currencies import format_minor, minor_unit_exponent

PREFILL_FIELDS = (
    "first_name",
    "last_name",
    "email",
    "address_line1",
    "address_line2",
    "city",
    "state",
    "postal_code",
    "country",
    "phone",
    "employer",
    "occupation",
)
CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "CAD": "$", "AUD": "$"}
STRIPE_JS_ORIGIN = "https://js.stripe.com"
CHALLENGE_ORIGINS = {
    "turnstile": ("https://challenges.cloudflare.com",),
    "hcaptcha": ("https://js.hcaptcha.com", "https://hcaptcha.com", "https://*.hcaptcha.com"),
}
NONE = "'none'"
SIMULATED_TOKENIZER_PATH = "/simulated/v1/payment_methods"
_REFCODE = re.compile(REFCODE_PATTERN)
# What a CSP frame-ancestors source may be: a scheme, a host and a port, nothing that could end the directive.
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?$")

Tokenizer = Literal["stripe", "simulated", "none"]
ChallengeProvider = Literal["test", "turnstile", "hcaptcha"]


@dataclass(frozen=True, slots=True)
class PageConfig:
    """What the page needs from the engine's configuration."""

    simulated: bool  # a simulated processor is configured: its tokenizer is served
    challenge_provider: ChallengeProvider | None  # None: no challenge verifier, no widget
    challenge_site_key: str | None = None


def challenge_provider(verifier: str, verify_url: str | None) -> ChallengeProvider | None:
    """The widget that goes with the configured verifier: the siteverify URL names its provider."""
    if verifier == "test":
        return "test"
    if verifier == "siteverify" and verify_url:
        return "hcaptcha" if "hcaptcha.com" in verify_url else "turnstile"
    return None


def tokenizer_for(campaign: Campaign, config: PageConfig) -> Tokenizer:
    if campaign.page.stripe_publishable_key:
        return "stripe"
    return "simulated" if config.simulated else "none"


def parse_amount(text: str | None, currency: str) -> int | None:
    """``?amount=25`` or ``25.50`` (major units, as donors and link builders write it) in minor units, or None."""
    if not text:
        return None
    exponent = minor_unit_exponent(currency)
    pattern = r"^(\d{1,9})$" if exponent == 0 else rf"^(\d{{1,9}})(?:\.(\d{{1,{exponent}}}))?$"
    match = re.match(pattern, text.strip())
    if match is None:
        return None
    whole, fraction = match.group(1), (match.group(2) if exponent else None) or ""
    minor = int(whole) * 10**exponent + int(fraction.ljust(exponent, "0") or "0")
    return minor if 1 <= minor <= AMOUNT_MINOR_MAX else None


def page_values(
    campaign: Campaign,
    query: Mapping[str, str],
    *,
    form_key: str,
    config: PageConfig,
    challenge_required: bool,
) -> dict[str, Any]:
    page = campaign.page
    currency = campaign.currency
    amount_minor = parse_amount(query.get("amount"), currency)
    presets = [{"minor": minor, "text": _amount_text(minor, currency)} for minor in page.presets]
    is_preset = amount_minor in page.presets
    refcode = query.get("refcode")
    prefill = {name: value[:TEXT_LENGTH_MAX] for name in PREFILL_FIELDS if (value := query.get(name))}
    prefill.setdefault("country", "US")
    tokenizer = tokenizer_for(campaign, config)
    return {
        "campaign": campaign.slug,
        "heading": page.heading or campaign.name,
        "intro": page.intro,
        "currency": currency,
        "symbol": CURRENCY_SYMBOLS.get(currency, ""),
        "exponent": minor_unit_exponent(currency),
        "presets": presets,
        "amount_minor": amount_minor,
        "other_amount": _amount_text(amount_minor, currency) if amount_minor and not is_preset else "",
        "prefill": prefill,
        "refcode": refcode if refcode and _REFCODE.match(refcode) else None,
        "form_key": form_key,
        # Made now, so that a double click, or a retry after a lost answer, is the same request (one gift).
        "idempotency_key": "page_" + secrets.token_urlsafe(24),
        "itemization_threshold": campaign.itemization_threshold_minor,
        "require_attestation": campaign.require_attestation,
        "attestations": page.attestations,
        "best_efforts_notice": page.best_efforts_notice,
        "tax_notice": page.tax_notice if page.kind == "political" else "",
        "tokenizer": tokenizer,
        "tokenizer_url": SIMULATED_TOKENIZER_PATH if tokenizer == "simulated" else "",
        "stripe_key": page.stripe_publishable_key if tokenizer == "stripe" else None,
        "challenge": {
            "provider": config.challenge_provider,
            "site_key": config.challenge_site_key or "",
            "required": challenge_required and config.challenge_provider is not None,
        },
    }


def _amount_text(minor: int, currency: str) -> str:
    text = format_minor(minor, currency)
    whole, _, fraction = text.partition(".")
    return whole if fraction and set(fraction) == {"0"} else text


_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("engine.donor_page", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,  # the template ships with the code: no stat() of its file on every render
)
_TEMPLATE = _ENVIRONMENT.get_template("donate.html")


def render_page(values: Mapping[str, Any]) -> str:
    return _TEMPLATE.render(values)


def content_security_policy(campaign: Campaign, tokenizer: Tokenizer, provider: ChallengeProvider | None) -> str:
    """Scripts from Surge itself, plus Stripe.js and the challenge provider only where the page uses them; framed
    only by the campaign's allowed origins."""
    scripts, connects, frames, styles = ["'self'"], ["'self'"], [], ["'self'"]
    if tokenizer == "stripe":
        scripts.append(STRIPE_JS_ORIGIN)
        connects.append("https://api.stripe.com")
        frames += [STRIPE_JS_ORIGIN, "https://hooks.stripe.com"]
    if provider in CHALLENGE_ORIGINS:
        origins = CHALLENGE_ORIGINS[provider]
        scripts += origins
        connects += origins
        frames += origins
        if provider == "hcaptcha":
            styles += origins  # hCaptcha's widget loads its stylesheet from its own origin
    if "*" in campaign.allowed_origins:
        ancestors = "*"
    else:
        ancestors = " ".join(["'self'", *(o for o in campaign.allowed_origins if _ORIGIN.match(o))])
    directives = [
        "default-src 'none'",
        f"script-src {' '.join(scripts)}",
        f"style-src {' '.join(styles)}",
        f"connect-src {' '.join(connects)}",
        f"frame-src {' '.join(frames) or NONE}",
        "img-src 'self' data:",
        "form-action 'self'",
        "base-uri 'none'",
        f"frame-ancestors {ancestors}",
    ]
    return "; ".join(directives)
