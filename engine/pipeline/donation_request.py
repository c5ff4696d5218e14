"""Validating a donation request body and identifying the donor.

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

from engine.pipeline.card_numbers import find_card_number
from engine.validation import ValidationProblem
from ledger.money import is_currency_code

AMOUNT_MINOR_MAX = 100_000_000  # $1,000,000.00: far above any legal individual contribution
DONOR_FIELDS_REQUIRED = ("first_name", "last_name", "email", "address_line1", "city", "state", "postal_code", "country")
DONOR_FIELDS_OPTIONAL = ("address_line2", "employer", "occupation", "phone", "citizenship_attested")
TEXT_LENGTH_MAX = 200
METADATA_KEYS_MAX = 20
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PAYMENT_METHOD = re.compile(r"^pm_[A-Za-z0-9_]{1,200}$")
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


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValidationProblem(None, "invalid_json", "The request body is not valid JSON.") from None
    if not isinstance(parsed, dict):
        raise ValidationProblem(None, "invalid_json", "The request body must be a JSON object.")
    card_field = find_card_number(parsed)
    if card_field is not None:
        raise _invalid(
            "This looks like a raw card number. Surge accepts processor tokens only (for example pm_card_visa): "
            "tokenize the card in the browser with your processor's library.",
            card_field,
            "card_number_refused",
        )
    return parsed


def _text(source: Mapping[str, Any], name: str, param: str, *, required: bool) -> str | None:
    value = source.get(name)
    if value is None or value == "":
        if required:
            raise _invalid(f"Missing required parameter: {param}.", param, "parameter_missing")
        return None
    if not isinstance(value, str):
        raise _invalid(f"{param} must be a string.", param)
    value = value.strip()
    if not value and required:
        raise _invalid(f"Missing required parameter: {param}.", param, "parameter_missing")
    if len(value) > TEXT_LENGTH_MAX:
        raise _invalid(f"{param} must be at most {TEXT_LENGTH_MAX} characters.", param)
    return value


def validate_donation(body: dict[str, Any]) -> DonationRequest:
    amount = body.get("amount")
    if amount is None:
        raise _invalid("Missing required parameter: amount.", "amount", "parameter_missing")
    if type(amount) is not int:
        raise _invalid("amount must be an integer number of minor units (cents), e.g. 2500 for $25.00.", "amount")
    if not 0 < amount <= AMOUNT_MINOR_MAX:
        raise _invalid(f"amount must be between 1 and {AMOUNT_MINOR_MAX} minor units.", "amount")
    currency = body.get("currency")
    if isinstance(currency, str):
        currency = currency.upper()
    if not isinstance(currency, str) or not is_currency_code(currency):
        raise _invalid("currency must be a three-letter ISO 4217 code such as usd.", "currency")
    campaign = _text(body, "campaign", "campaign", required=True)
    donor_source = body.get("donor")
    if not isinstance(donor_source, dict):
        raise _invalid("donor must be an object with the donor's name and address.", "donor", "parameter_missing")
    donor: dict[str, Any] = {}
    for name in DONOR_FIELDS_REQUIRED:
        donor[name] = _text(donor_source, name, f"donor.{name}", required=True)
    for name in DONOR_FIELDS_OPTIONAL:
        if name == "citizenship_attested":
            attested = donor_source.get(name)
            if attested is not None and not isinstance(attested, bool):
                raise _invalid("donor.citizenship_attested must be true or false.", "donor.citizenship_attested")
            donor[name] = attested is True
        else:
            donor[name] = _text(donor_source, name, f"donor.{name}", required=False)
    unknown = set(donor_source) - set(DONOR_FIELDS_REQUIRED) - set(DONOR_FIELDS_OPTIONAL)
    if unknown:
        raise _invalid(f"Unknown donor field: {sorted(unknown)[0]}.", f"donor.{sorted(unknown)[0]}")
    if not _EMAIL.match(donor["email"]):
        raise _invalid("donor.email is not a valid email address.", "donor.email")
    payment_method = body.get("payment_method")
    if not isinstance(payment_method, str) or not _PAYMENT_METHOD.match(payment_method):
        raise _invalid(
            "payment_method must be a processor token such as pm_card_visa.", "payment_method", "payment_method_invalid"
        )
    lowered = payment_method.lower()
    if any(word in lowered for word in BLOCKED_PAYMENT_METHOD_WORDS):
        raise _invalid(
            "Cash-like and anonymous payment methods cannot be used for contributions.",
            "payment_method",
            "payment_method_not_allowed",
        )
    metadata = _metadata(body.get("metadata"))
    unknown_top = set(body) - {"amount", "currency", "campaign", "donor", "payment_method", "metadata"}
    if unknown_top:
        name = sorted(unknown_top)[0]
        raise _invalid(f"Unknown parameter: {name}.", name, "parameter_unknown")
    if campaign is None:
        raise RuntimeError("required campaign came back empty")  # _text(required=True) never returns None
    return DonationRequest(
        amount_minor=amount,
        currency=currency,
        campaign=campaign,
        donor=donor,
        payment_method=payment_method,
        metadata=metadata,
        donor_key=donor_key(donor["first_name"], donor["last_name"], donor["postal_code"]),
        fingerprint=hashlib.blake2b(orjson.dumps(body, option=orjson.OPT_SORT_KEYS), digest_size=16).digest(),
    )


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > METADATA_KEYS_MAX:
        raise _invalid(f"metadata must be an object with at most {METADATA_KEYS_MAX} keys.", "metadata")
    result = {}
    for key, item in value.items():
        if not isinstance(item, str | int) or isinstance(item, bool) or len(str(key)) > 40 or len(str(item)) > 500:
            raise _invalid("metadata values must be strings or integers (keys up to 40, values up to 500).", "metadata")
        result[str(key)] = str(item)
    return result


def _simplify(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c.isalnum() and not unicodedata.combining(c)).lower()


def donor_key(first_name: str, last_name: str, postal_code: str) -> str:
    first_word = first_name.strip().split()[0] if first_name.strip() else ""
    return f"{_simplify(last_name)}|{_simplify(first_word)}|{_simplify(postal_code)[:5]}"
