"""The one narrow interface every payment processor adapter implements.

Outcomes are data, not exceptions (Kill Bill's processor statuses are the model). The rule that keeps money exact:
``UNKNOWN`` means the processor may or may not have charged; it is resolved by :meth:`Processor.lookup`, never by
a blind second charge. Conversion between :class:`~ledger.money.Money` and a processor's wire format happens only
inside its adapter. Core code imports this module, never a processor SDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from ledger.money import Money


class ChargeStatus(StrEnum):
    SUCCEEDED = "succeeded"  # money taken
    DECLINED = "declined"  # the card or bank said no; decline_code says why
    PENDING = "pending"  # accepted, outcome later (requires_action, processing); a webhook or lookup settles it
    FAILED = "failed"  # definitely not charged for a non-card reason (bad token, invalid request)
    RETRYABLE = "retryable"  # definitely not processed (rate limited, outage before acceptance): retry later, same key
    UNKNOWN = "unknown"  # may or may not have happened (timeout, connection lost): resolve with lookup
    NOT_FOUND = "not_found"  # lookup only: the processor has no charge for this key


class RefundStatus(StrEnum):
    SUCCEEDED = "succeeded"
    PENDING = "pending"  # accepted, outcome later: a refund event or lookup_refund settles it
    FAILED = "failed"  # definitely not refunded (or the refund failed after being accepted)
    RETRYABLE = "retryable"  # definitely not processed: send again later, same key
    UNKNOWN = "unknown"  # may or may not have happened: resolve with lookup_refund
    NOT_FOUND = "not_found"  # lookup_refund only: the processor has no refund for this key


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    idempotency_key: str  # derived from the donation: the same donation always sends the same key
    donation_id: str
    amount: Money
    payment_method: str  # a processor token such as pm_card_visa, never a card number
    campaign: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChargeResult:
    status: ChargeStatus
    processor_reference: str | None = None  # e.g. Stripe's PaymentIntent id
    amount: Money | None = None  # what was charged
    fee: Money | None = None  # the processor's fee, when known at charge time
    decline_code: str | None = None
    message: str | None = None
    # The card that paid, as the processor reports it (for the donor's receipt): never taken from the donor's input.
    card_brand: str | None = None  # lower case, Stripe's spelling: visa, mastercard, amex, ...
    card_last4: str | None = None


@dataclass(frozen=True, slots=True)
class RefundRequest:
    idempotency_key: str  # derived from refund_id: the same refund always sends the same key
    refund_id: str  # Surge's refund id, sent in the processor refund's metadata (``surge_refund_id``)
    processor_reference: str  # the charge being refunded
    amount: Money
    donation_id: str | None = None  # sent in the refund's metadata, so its events name the donation


SURGE_REFUND_ID = "surge_refund_id"  # the metadata key naming Surge's refund on the processor's refund


@dataclass(frozen=True, slots=True)
class RefundResult:
    status: RefundStatus
    processor_reference: str | None = None  # e.g. Stripe's Refund id
    message: str | None = None


class EventType(StrEnum):
    CHARGE_SUCCEEDED = "charge_succeeded"
    CHARGE_FAILED = "charge_failed"
    CHARGE_REFUNDED = "charge_refunded"  # the charge's refunded total grew; the refund itself may be unnamed
    REFUND_UPDATED = "refund_updated"  # one refund's state: refund_status, object_id and (if Surge's) refund_id
    CHARGE_UPDATED = "charge_updated"  # a charge's fee reported after the charge (late fee); ``fee`` carries it
    DISPUTE_CREATED = "dispute_created"
    DISPUTE_WON = "dispute_won"
    DISPUTE_LOST = "dispute_lost"
    PAYOUT_PAID = "payout_paid"
    IGNORED = "ignored"  # a well-formed, verified event Surge does not act on


@dataclass(frozen=True, slots=True)
class ProcessorEvent:
    id: str  # processed once per id
    type: EventType
    created: datetime
    processor_reference: str | None = None  # the charge (PaymentIntent) it concerns
    donation_id: str | None = None  # from the charge's metadata, when present
    amount: Money | None = None  # refunded / disputed / paid-out amount
    fee: Money | None = None  # charge fee or dispute fee
    decline_code: str | None = None
    object_id: str | None = None  # the refund, dispute or payout id
    raw: Mapping[str, Any] = field(default_factory=dict)
    refund_status: RefundStatus | None = None  # REFUND_UPDATED: the refund's state at the processor
    refund_id: str | None = None  # REFUND_UPDATED: Surge's refund id from the refund's metadata, when Surge made it
    amount_refunded: Money | None = None  # CHARGE_REFUNDED: the charge's cumulative refunded amount, when known


class BalanceTransactionType(StrEnum):
    CHARGE = "charge"
    REFUND = "refund"
    DISPUTE = "dispute"  # funds withdrawn or reinstated for a dispute
    PAYOUT = "payout"
    FEE = "fee"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class BalanceTransaction:
    """One movement on the processor's balance, the unit of reconciliation."""

    id: str
    type: BalanceTransactionType
    amount: Money  # gross, signed: charges positive, refunds/payouts negative
    fee: Money
    created: datetime
    source_reference: str | None = None  # charge / refund / payout id it belongs to
    donation_id: str | None = None


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """A header whatever its case: aiohttp's headers are case-insensitive already, a plain dict is not."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


class WebhookSignatureError(Exception):
    """The webhook's signature is missing, malformed, wrong or too old: reject with 400, change nothing."""


class WebhookPayloadError(Exception):
    """The webhook verified but its payload cannot be understood."""


class Processor(Protocol):
    name: str

    async def charge(self, request: ChargeRequest) -> ChargeResult: ...

    async def refund(self, request: RefundRequest) -> RefundResult: ...

    async def lookup_refund(self, request: RefundRequest, refund_reference: str | None) -> RefundResult:
        """The refund made for ``request`` (its idempotency key / Surge refund id, or ``refund_reference`` when
        known), or NOT_FOUND when the processor has none; UNKNOWN when it cannot tell now."""
        ...

    async def lookup(self, idempotency_key: str, processor_reference: str | None) -> ChargeResult:
        """The charge made with ``idempotency_key`` (or ``processor_reference`` when known), or NOT_FOUND."""
        ...

    def parse_webhook(self, payload: bytes, headers: Mapping[str, str]) -> ProcessorEvent: ...

    async def balance_transactions(self, created_from: datetime, created_to: datetime) -> list[BalanceTransaction]: ...

    async def close(self) -> None: ...


# ---- saved payment methods (off-session charges: recurring installments, Quick Donate) ---------------------------
#
# A saved method is a processor customer with a payment method attached for later use without the donor present.
# Its charge goes through the same ``Processor.charge`` as any donation: the request's ``payment_method`` is then an
# off-session token naming both references (``off_session_token``), which only engine code makes — the API's
# payment-method pattern (``pm_…``) refuses it, so no client can charge someone else's saved card. An adapter that
# sees such a token charges the customer's method off-session; the processor asking for authentication is then a
# decline with code ``authentication_required`` (the donor must confirm on the page), never a pending charge.

OFF_SESSION_PREFIX = "offsession:"
AUTHENTICATION_REQUIRED = "authentication_required"  # the decline code of an off-session charge needing the donor


def off_session_token(customer_reference: str, payment_method_reference: str) -> str:
    return f"{OFF_SESSION_PREFIX}{customer_reference}:{payment_method_reference}"


def parse_off_session_token(payment_method: str) -> tuple[str, str] | None:
    """(customer, payment method) of an off-session token; None for an ordinary payment-method token."""
    if not payment_method.startswith(OFF_SESSION_PREFIX):
        return None
    customer, _, method = payment_method[len(OFF_SESSION_PREFIX) :].partition(":")
    if not customer or not method:
        raise ValueError(f"malformed off-session token {payment_method!r}")
    return customer, method


class SaveStatus(StrEnum):
    SAVED = "saved"
    DECLINED = "declined"  # the card was refused when attached (decline_code says why)
    FAILED = "failed"  # definitely not saved for a non-card reason (unknown token, invalid request)
    UNKNOWN = "unknown"  # the processor did not answer: nothing is recorded by Surge; the donor may try again


@dataclass(frozen=True, slots=True)
class SavedMethodDetails:
    """The processor's references and what a donor needs to recognise the card: nothing else is stored."""

    customer_reference: str
    payment_method_reference: str
    brand: str | None = None
    last4: str | None = None
    exp_month: int | None = None
    exp_year: int | None = None


@dataclass(frozen=True, slots=True)
class SaveResult:
    status: SaveStatus
    method: SavedMethodDetails | None = None
    decline_code: str | None = None
    message: str | None = None


class SavesPaymentMethods(Protocol):
    """Optional part of a processor: saving a payment method for off-session charges, and forgetting it."""

    name: str

    async def save_payment_method(self, payment_method: str, email: str, name: str) -> SaveResult:
        """Create a customer for the donor and attach ``payment_method`` to it for off-session use."""
        ...

    async def detach_payment_method(self, method: SavedMethodDetails) -> bool:
        """Detach the method from its customer (the donor deleted it); True when the processor confirmed."""
        ...

    async def refresh_payment_method(self, method: SavedMethodDetails) -> SavedMethodDetails | None:
        """The method as the processor has it now (a card updater may have changed expiry or number), or None."""
        ...
