"""Request and response bodies, declared once as msgspec Structs.

Request bodies are validated by decoding into these (``engine.validation.decode``) and ``/openapi.json`` is
generated from them (``engine.api.openapi``), so the schema cannot drift from what the server checks. Each request
Struct carries its ``wording``: the Stripe-style code and message for each field's problems, so that clients see the
same errors as before the models existed.

Rules a Struct cannot express stay in the domain validator and are stated in the schema's descriptions where
possible: a refund's amount is at most what is left unrefunded; a payment method must not be a cash-like or
anonymous instrument; an adjusting leg's amount is not zero and its currency is in the ISO 4217 table
(``engine.finance.reconciliation.checked_legs``); the reconciliation window
(``from`` before ``to``, at most 366 days) and its times (``toolkit.times``: a zone is required).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from msgspec import Meta, Struct, field

from engine.campaigns import CampaignCreate
from engine.finance.reconciliation import LEGS_WORDING, LegsIn
from engine.pipeline.donation_request import (
    AMOUNT_MINOR_MAX,
    BLOCKED_PAYMENT_METHOD_WORDS,
    METADATA_KEY_LENGTH_MAX,
    METADATA_KEYS_MAX,
    METADATA_VALUE_LENGTH_MAX,
    REFCODE_LENGTH_MAX,
    REFCODE_PATTERN,
    TEXT_LENGTH_MAX,
)
from engine.validation import INTEGER_MAX, INTEGER_MIN, CurrencyCode, Unknown, Wording, invalid_only, required_text

SLACK_S_DEFAULT = 3600
SLACK_S_MAX = 7 * 86400
WINDOW_DAYS_MAX = 366
MEMO_LENGTH_MAX = 2000
IDEMPOTENCY_KEY_LENGTH_MAX = 255
CHALLENGE_TOKEN_LENGTH_MAX = 4096  # hCaptcha's and Turnstile's tokens are up to about 2 KB

# Non-blank: "\S" is searched, so a value of spaces only is refused (the domain trims what it keeps).
RequiredText = Annotated[str, Meta(min_length=1, max_length=TEXT_LENGTH_MAX, pattern=r"\S")]
OptionalText = Annotated[str, Meta(max_length=TEXT_LENGTH_MAX)] | None
Email = Annotated[str, Meta(max_length=TEXT_LENGTH_MAX, pattern=r"^\s*[^@\s]+@[^@\s]+\.[^@\s]+\s*$")]
PaymentMethod = Annotated[
    str,
    Meta(
        pattern=r"^pm_[A-Za-z0-9_]{1,200}$",
        max_length=203,
        description="A processor token such as pm_card_visa, never a card number. Refused when it names a "
        f"cash-like or anonymous instrument (contains any of: {', '.join(BLOCKED_PAYMENT_METHOD_WORDS)}).",
    ),
]
MetadataValue = (
    Annotated[str, Meta(max_length=METADATA_VALUE_LENGTH_MAX)]
    | Annotated[int, Meta(ge=INTEGER_MIN, le=INTEGER_MAX)]  # 64 bits: engine.api.validation refuses longer
)
Metadata = Annotated[
    dict[Annotated[str, Meta(max_length=METADATA_KEY_LENGTH_MAX)], MetadataValue], Meta(max_length=METADATA_KEYS_MAX)
]
Instant = Annotated[str, Meta(extra_json_schema={"format": "date-time", "description": "ISO 8601 with a time zone"})]


# ---- requests ------------------------------------------------------------------------------------------------------


class Donor(Struct, forbid_unknown_fields=True, kw_only=True):
    first_name: RequiredText
    last_name: RequiredText
    email: Email
    address_line1: RequiredText
    city: RequiredText
    state: RequiredText
    postal_code: RequiredText
    country: RequiredText
    address_line2: OptionalText = None
    employer: OptionalText = None
    occupation: OptionalText = None
    phone: OptionalText = None
    citizenship_attested: bool | None = None

    wording: ClassVar[dict[str, Wording]] = {
        **{
            name: required_text()
            for name in ("first_name", "last_name", "address_line1", "city", "state", "postal_code", "country")
        },
        "email": required_text(pattern="{param} is not a valid email address."),
        **{name: required_text(optional=True) for name in ("address_line2", "employer", "occupation", "phone")},
        "citizenship_attested": invalid_only("{param} must be true or false."),
    }
    unknown: ClassVar[Unknown | None] = Unknown("parameter_invalid", "Unknown donor field: {name}.")


class DonationCreate(Struct, forbid_unknown_fields=True, kw_only=True):
    amount: Annotated[int, Meta(ge=1, le=AMOUNT_MINOR_MAX, description="Minor units (cents).")]
    currency: CurrencyCode
    campaign: RequiredText
    donor: Donor
    payment_method: PaymentMethod
    metadata: Metadata | None = None
    # The donation page's challenge token (hCaptcha / Turnstile), sent after a 428 challenge_required.
    challenge: Annotated[str, Meta(min_length=1, max_length=CHALLENGE_TOKEN_LENGTH_MAX)] | None = None
    # Attribution (the donation page's ?refcode=): stored on the donation, reported per refcode.
    refcode: Annotated[str, Meta(pattern=REFCODE_PATTERN, max_length=REFCODE_LENGTH_MAX)] | None = None

    wording: ClassVar[dict[str, Wording]] = {
        "amount": Wording(
            invalid="amount must be an integer number of minor units (cents), e.g. 2500 for $25.00.",
            out_of_range=f"amount must be between 1 and {AMOUNT_MINOR_MAX} minor units.",
            missing="Missing required parameter: amount.",
        ),
        "currency": invalid_only("currency must be a three-letter ISO 4217 code such as usd."),
        "campaign": required_text(),
        "donor": invalid_only("donor must be an object with the donor's name and address.", code="parameter_missing"),
        "payment_method": invalid_only(
            "payment_method must be a processor token such as pm_card_visa.", code="payment_method_invalid"
        ),
        "challenge": invalid_only(
            f"challenge must be the challenge widget's token (1 to {CHALLENGE_TOKEN_LENGTH_MAX} characters)."
        ),
        "refcode": invalid_only(
            f"refcode must be 1 to {REFCODE_LENGTH_MAX} letters, digits, dots, dashes or underscores."
        ),
        "metadata": invalid_only(
            f"metadata must be an object with at most {METADATA_KEYS_MAX} keys.",
            item=f"metadata values must be strings or integers (keys up to {METADATA_KEY_LENGTH_MAX}, values up to "
            f"{METADATA_VALUE_LENGTH_MAX}).",
        ),
    }
    unknown: ClassVar[Unknown | None] = Unknown("parameter_unknown", "Unknown parameter: {name}.")


class RefundCreate(Struct, forbid_unknown_fields=True, kw_only=True):
    # The upper bound is the donation's unrefunded amount: checked by engine.payments.refunds, not here.
    amount: Annotated[int, Meta(ge=1, le=INTEGER_MAX, description="Minor units; default: all that is left")] | None = (
        None
    )
    reason: Any = None

    wording: ClassVar[dict[str, Wording]] = {
        "amount": Wording(
            invalid="amount must be an integer number of minor units.",
            out_of_range="Refund amount must be between 1 and the unrefunded amount (minor units).",
        ),
    }
    unknown: ClassVar[Unknown | None] = Unknown("parameter_unknown", "Unknown parameter: {name}.")


class KeyCreate(Struct, kw_only=True):
    """Unknown fields are ignored."""

    role: Literal["form", "finance", "admin"]
    label: str | None = None

    wording: ClassVar[dict[str, Wording]] = {
        "role": invalid_only("role must be form, finance or admin."),
        "label": invalid_only("label must be a string."),
    }
    unknown: ClassVar[Unknown | None] = None


class ReconciliationCreate(Struct, kw_only=True):
    """Unknown fields are ignored. ``from`` must be before ``to``, at most 366 days apart (checked by the handler)."""

    processor: Annotated[str, Meta(min_length=1)]
    start: Instant = field(name="from")
    end: Instant = field(name="to")
    slack_s: Annotated[int, Meta(ge=0, le=SLACK_S_MAX)] = SLACK_S_DEFAULT

    wording: ClassVar[dict[str, Wording]] = {
        "processor": invalid_only("processor is required", code="parameter_missing"),
        "from": invalid_only("from must be an ISO 8601 time with a time zone"),
        "to": invalid_only("to must be an ISO 8601 time with a time zone"),
        "slack_s": invalid_only(f"slack_s must be an integer 0-{SLACK_S_MAX}"),
    }
    unknown: ClassVar[Unknown | None] = None


class ExceptionResolve(Struct, kw_only=True):
    """Unknown fields are ignored. Without legs, the proposed adjustment is posted."""

    memo: Annotated[str, Meta(min_length=1, max_length=MEMO_LENGTH_MAX, pattern=r"\S")]
    # The legs' shape is the model's; a non-zero amount and an ISO 4217 currency: reconciliation.checked_legs.
    legs: LegsIn | None = None

    wording: ClassVar[dict[str, Wording]] = {
        "memo": invalid_only(f"memo must say why, in 1-{MEMO_LENGTH_MAX} characters"),
        "legs": LEGS_WORDING,
    }
    unknown: ClassVar[Unknown | None] = None


REQUEST_MODELS: tuple[type[Struct], ...] = (
    DonationCreate,
    RefundCreate,
    CampaignCreate,
    KeyCreate,
    ReconciliationCreate,
    ExceptionResolve,
)


# ---- responses -----------------------------------------------------------------------------------------------------


class ErrorDetail(Struct, kw_only=True):
    type: str
    code: str
    message: str
    param: str | None = None
    decline_code: str | None = None


class Error(Struct, kw_only=True):
    """Stripe-shaped: 400 invalid, 401/403 auth, 402 declined, 409 idempotency, 422 limit, 429/503 Retry-After."""

    error: ErrorDetail


class Donation(Struct, kw_only=True):
    id: str
    object: Literal["donation"]
    status: Literal["processing", "succeeded", "declined", "failed"]
    amount: int
    amount_refunded: int
    amount_disputed: int
    currency: str
    campaign: str
    election: str
    fee: int | None
    processor: str | None
    processor_reference: str | None
    payment_method: str
    decline_code: str | None
    failure_message: str | None
    donor: dict[str, Any]
    metadata: dict[str, str]
    created: str
    updated: str
    settled: str | None
    refcode: str | None


class DonationList(Struct, kw_only=True):
    object: Literal["list"]
    data: list[Donation]
    has_more: bool


class Refund(Struct, kw_only=True):
    id: str
    object: Literal["refund"]
    donation: str
    amount: int
    currency: str
    status: Literal["pending", "succeeded", "failed"]
    processor_reference: str | None
    failure_message: str | None
    created: str


class Campaign(Struct, kw_only=True):
    object: Literal["campaign"]
    slug: str
    name: str
    currency: str
    election: str
    contribution_limit: int
    itemization_threshold: int
    require_attestation: bool
    allowed_origins: list[str]
    page: dict[str, Any]  # engine.campaigns.PageSettings


class CampaignList(Struct, kw_only=True):
    object: Literal["list"]
    data: list[Campaign]
    has_more: bool


class ApiKeyCreated(Struct, kw_only=True):
    object: Literal["api_key"]
    id: str
    role: Literal["form", "finance", "admin"]
    secret: str


RESPONSE_MODELS: tuple[type[Struct], ...] = (
    Error,
    Donation,
    DonationList,
    Refund,
    Campaign,
    CampaignList,
    ApiKeyCreated,
)
