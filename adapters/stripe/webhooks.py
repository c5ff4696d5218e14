"""Webhook verification: the ``Stripe-Signature`` header (``t=<unix time>,v1=<HMAC-SHA256(secret, "t.body")>``) is
checked by the SDK's ``WebhookSignature.verify_header`` against the raw body, with a timestamp tolerance against
replays; only then is the body parsed and translated."""

from __future__ import annotations

import json
from collections.abc import Mapping

import stripe

from adapters.base import ProcessorEvent, WebhookPayloadError, WebhookSignatureError, header_value
from adapters.stripe.transformers.events import processor_event_from_stripe_event

SIGNATURE_HEADER = "Stripe-Signature"


def signature_header(headers: Mapping[str, str]) -> str | None:
    return header_value(headers, SIGNATURE_HEADER)


def verify(payload: bytes, headers: Mapping[str, str], secret: str | None, tolerance_s: int) -> str:
    """The verified body as text; WebhookSignatureError when the signature is missing, malformed, wrong or stale."""
    if not secret:
        raise WebhookSignatureError("no webhook signing secret configured (STRIPE_WEBHOOK_SECRET)")
    header = signature_header(headers)
    if not header:
        raise WebhookSignatureError(f"missing {SIGNATURE_HEADER} header")
    try:
        # Stripe signs the body as text; a body that is not UTF-8 cannot carry a valid signature.
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookSignatureError("webhook body is not UTF-8") from None
    try:
        stripe.WebhookSignature.verify_header(text, header, secret, tolerance_s)
    except stripe.SignatureVerificationError as error:
        raise WebhookSignatureError(error.user_message or "signature verification failed") from None
    return text


def parse(payload: bytes, headers: Mapping[str, str], secret: str | None, tolerance_s: int) -> ProcessorEvent:
    text = verify(payload, headers, secret, tolerance_s)
    try:
        event = json.loads(text)
    except ValueError as error:
        raise WebhookPayloadError(f"webhook body is not JSON: {error}") from None
    if not isinstance(event, dict):
        raise WebhookPayloadError("webhook body is not a JSON object")
    return processor_event_from_stripe_event(event)
