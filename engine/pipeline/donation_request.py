"""A donation request in domain terms: the rules the request model cannot express, and identifying the donor.

The body's shape (types, required fields, lengths, amount bounds, patterns, unknown fields) is checked by decoding
it into ``engine.api.models.DonationCreate``; :func:`new_donation_request` takes the decoded values and applies what
is left: the currency must be in ledger.currencies' ISO 4217 table (the model checks three letters only), trimming of
texts (a blank optional field is absent), refusing cash-like and anonymous payment methods, the digit count of
integer metadata values, and the campaign's own rules (:func:`check_against_campaign`); and derives the donor key
and the request fingerprint.

Donor identity for contribution limits follows how campaign-finance aggregation works (FEC: same name and
address): the donor key is ``last|first|zip5`` where names are Unicode-normalised (NFKD, accents dropped),
lower-cased, reduced to letters and digits, the first name to its first word (so "Jane Q." and "Jane" aggregate),
and the postal code to its first five characters without spaces. Email is not part of the key: one person may use
several, and a household may share one.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from engine.campaigns import Campaign
from engine.pipeline.outcomes import CampaignRefusal, CampaignRefusalReason
from engine.validation import ValidationProblem
from ledger.money import is_currency_code

AMOUNT_MINOR_MAX = 100_000_000  # $1,000,000.00: far above any legal individual contribution
DONOR_FIELDS_REQUIRED = ("first_name", "last_name", "email", "address_line1", "city", "state", "postal_code", "country")
DONOR_FIELDS_OPTIONAL = ("address_line2", "employer", "occupation", "phone", "citizenship_attested")
TEXT_LENGTH_MAX = 200
METADATA_KEYS_MAX = 20
METADATA_KEY_LENGTH_MAX = 40
METADATA_VALUE_LENGTH_MAX = 500  # characters of a string, digits (with sign) of an integer
REFCODE_LENGTH_MAX = 64
REFCODE_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"  # surge.donations' CHECK on refcode
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
# Cash-like and anonymous instruments are refused (contributions must be traceable to a named donor).
BLOCKED_PAYMENT_METHOD_WORDS = ("cash", "prepaid", "gift", "crypto", "anonymous", "moneyorder")


@dataclass(frozen=True, slots=True)
class DonationRequest:
    amount_minor: int
    currency: str
    campaign: str
    donor: dict[str, Any]
    payment_method: str
    metadata: dict[str, str]
    donor_key: str
    fingerprint: bytes
    refcode: str | None = None  # attribution: the donation page's ?refcode=

    @property
    def has_employer_and_occupation(self) -> bool:
        return bool(self.donor.get("employer")) and bool(self.donor.get("occupation"))


def _invalid(message: str, param: str, code: str = "parameter_invalid") -> ValidationProblem:
    return ValidationProblem(param, code, message)


def validate_idempotency_key(value: str | None) -> str:
    if value is None:
        raise _invalid("An Idempotency-Key header is required.", "Idempotency-Key", "idempotency_key_missing")
    if not _IDEMPOTENCY_KEY.match(value):
        raise _invalid("Idempotency-Key must be 1-255 printable ASCII characters.", "Idempotency-Key")
    return value


def request_fingerprint(body: Mapping[str, Any]) -> bytes:
    """The request body's identity for idempotent replays (key order does not matter)."""
    return hashlib.blake2b(orjson.dumps(body, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()


def new_donation_request(
    *,
    amount_minor: int,
    currency: str,
    campaign: str,
    donor: Mapping[str, Any],
    payment_method: str,
    metadata: Mapping[str, str | int] | None,
    fingerprint: bytes,
    refcode: str | None = None,
) -> DonationRequest:
    """A request from values already shaped by the request model; raises :class:`ValidationProblem`."""
    currency = currency.upper()
    if not is_currency_code(currency):
        raise _invalid("currency must be a three-letter ISO 4217 code such as usd.", "currency")
    kept: dict[str, Any] = {}
    for name in DONOR_FIELDS_REQUIRED:
        kept[name] = str(donor[name]).strip()
    for name in DONOR_FIELDS_OPTIONAL:
        value = donor.get(name)
        if name == "citizenship_attested":
            kept[name] = value is True
        else:
            kept[name] = None if value is None or value == "" else str(value).strip()
    lowered = payment_method.lower()
    if any(word in lowered for word in BLOCKED_PAYMENT_METHOD_WORDS):
        raise _invalid(
            "Cash-like and anonymous payment methods cannot be used for contributions.",
            "payment_method",
            "payment_method_not_allowed",
        )
    return DonationRequest(
        amount_minor=amount_minor,
        currency=currency,
        campaign=campaign.strip(),
        donor=kept,
        payment_method=payment_method,
        metadata=_metadata(metadata or {}),
        donor_key=donor_key(kept["first_name"], kept["last_name"], kept["postal_code"]),
        fingerprint=fingerprint,
        refcode=refcode,
    )


def check_against_campaign(request: DonationRequest, campaign: Campaign | None) -> CampaignRefusal | None:
    """The campaign's rules for a request: it exists, takes this currency, and has the attestation it requires."""
    if campaign is None:
        return CampaignRefusal(CampaignRefusalReason.CAMPAIGN_MISSING, request.campaign)
    if request.currency != campaign.currency:
        return CampaignRefusal(CampaignRefusalReason.CURRENCY_MISMATCH, campaign.slug, campaign)
    if campaign.require_attestation and not request.donor.get("citizenship_attested"):
        return CampaignRefusal(CampaignRefusalReason.ATTESTATION_REQUIRED, campaign.slug, campaign)
    return None


def _metadata(value: Mapping[str, str | int]) -> dict[str, str]:
    result = {}
    for key, item in value.items():
        text = str(item)
        if len(text) > METADATA_VALUE_LENGTH_MAX:  # an integer's digits: a string's length is the model's rule
            raise _invalid(
                f"metadata values must be strings or integers (keys up to {METADATA_KEY_LENGTH_MAX}, values up to "
                f"{METADATA_VALUE_LENGTH_MAX}).",
                "metadata",
            )
        result[key] = text
    return result


def _simplify(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c.isalnum() and not unicodedata.combining(c)).lower()


def donor_key(first_name: str, last_name: str, postal_code: str) -> str:
    first_word = first_name.strip().split()[0] if first_name.strip() else ""
    return f"{_simplify(last_name)}|{_simplify(first_word)}|{_simplify(postal_code)[:5]}"
