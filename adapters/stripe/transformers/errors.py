"""What a failed Stripe call means for the money: declined, failed, retryable or unknown (may have happened)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aiohttp
import stripe

from adapters.base import ChargeResult, ChargeStatus, RefundResult, RefundStatus
from adapters.stripe.transformers.objects import id_of


class ErrorKind(StrEnum):
    DECLINED = "declined"  # the card said no
    FAILED = "failed"  # definitely not done: invalid request, bad configuration
    RETRYABLE = "retryable"  # definitely not done, try later with the same key
    UNKNOWN = "unknown"  # may or may not have been done


@dataclass(frozen=True, slots=True)
class ClassifiedError:
    kind: ErrorKind
    message: str
    code: str | None = None  # decline code for DECLINED, Stripe's error code otherwise
    processor_reference: str | None = None  # the PaymentIntent a decline left behind, when Stripe names it


def classify_error(error: BaseException) -> ClassifiedError:
    """What a failed call means for the money. Anything not known to be harmless is UNKNOWN."""
    body = _error_body(error)
    if isinstance(error, stripe.CardError):
        code = body.get("decline_code") or error.code or "card_declined"
        reference = id_of(body.get("payment_intent"))
        return ClassifiedError(ErrorKind.DECLINED, _message(error, "card declined"), code, reference)
    if isinstance(error, stripe.RateLimitError):
        return ClassifiedError(ErrorKind.RETRYABLE, "Stripe rate-limited the request (429); nothing was processed")
    if isinstance(error, stripe.IdempotencyError):
        return ClassifiedError(
            ErrorKind.UNKNOWN,
            "Stripe refused the idempotency key (reused with different parameters): an earlier request with this "
            f"key may have been processed; resolve with lookup ({_message(error, 'idempotency error')})",
            "idempotency_error",
        )
    if isinstance(error, stripe.InvalidRequestError):
        code = error.code or ("resource_missing" if error.http_status == 404 else None)
        parameter = f" (parameter {error.param})" if getattr(error, "param", None) else ""
        return ClassifiedError(ErrorKind.FAILED, _message(error, "invalid request") + parameter, code)
    if isinstance(error, stripe.AuthenticationError):
        return ClassifiedError(
            ErrorKind.FAILED,
            f"Stripe rejected the API key: check STRIPE_SECRET_KEY ({_message(error, 'authentication failed')})",
            "authentication_error",
        )
    if isinstance(error, stripe.PermissionError):
        return ClassifiedError(
            ErrorKind.FAILED,
            "the API key in STRIPE_SECRET_KEY lacks permission for this request (restricted key?): "
            + _message(error, "permission denied"),
            "permission_error",
        )
    if isinstance(error, stripe.APIConnectionError | TimeoutError | aiohttp.ClientError):
        # The request may have reached Stripe before the connection failed or the timeout struck.
        return ClassifiedError(
            ErrorKind.UNKNOWN, f"no answer from Stripe ({type(error).__name__}); the request may have been processed"
        )
    if isinstance(error, stripe.APIError):
        status = error.http_status
        if status is not None and 400 <= status < 500 and status != 409:
            return ClassifiedError(ErrorKind.FAILED, f"Stripe answered {status}: {_message(error, 'error')}")
        return ClassifiedError(
            ErrorKind.UNKNOWN, f"Stripe error {status}: {_message(error, 'server error')}; resolve with lookup"
        )
    return ClassifiedError(ErrorKind.UNKNOWN, f"unexpected {type(error).__name__}: {error}")


def charge_result_from_error(error: BaseException) -> ChargeResult:
    classified = classify_error(error)
    status = {
        ErrorKind.DECLINED: ChargeStatus.DECLINED,
        ErrorKind.FAILED: ChargeStatus.FAILED,
        ErrorKind.RETRYABLE: ChargeStatus.RETRYABLE,
        ErrorKind.UNKNOWN: ChargeStatus.UNKNOWN,
    }[classified.kind]
    decline_code = classified.code if classified.kind is ErrorKind.DECLINED else None
    return ChargeResult(
        status,
        processor_reference=classified.processor_reference,
        decline_code=decline_code,
        message=classified.message,
    )


def refund_result_from_error(error: BaseException) -> RefundResult:
    classified = classify_error(error)
    status = {
        ErrorKind.DECLINED: RefundStatus.FAILED,
        ErrorKind.FAILED: RefundStatus.FAILED,
        ErrorKind.RETRYABLE: RefundStatus.RETRYABLE,
        ErrorKind.UNKNOWN: RefundStatus.UNKNOWN,
    }[classified.kind]
    return RefundResult(status, message=classified.message)


def _error_body(error: BaseException) -> Mapping[str, Any]:
    body = getattr(error, "json_body", None)
    inner = body.get("error") if isinstance(body, dict) else None
    return inner if isinstance(inner, dict) else {}


def _message(error: BaseException, fallback: str) -> str:
    return getattr(error, "user_message", None) or fallback
