"""Stripe-shaped errors on the wire: ``{"error": {"type", "code", "message", "param", ...}}``.

Domain code raises or returns outcomes (validation problems, refusals, overload, key problems); :func:`api_error`
is the one place that turns each into an HTTP status and a Stripe-shaped error. Handlers raise :class:`ApiError`
for HTTP-level problems; the middleware turns it, the domain exceptions and aiohttp's own HTTP errors into the JSON
body and status. Anything else is a bug: logged with its traceback and answered 500 with no detail.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import asyncpg
import orjson
from aiohttp import web

from engine.api.handler import Handler
from engine.keys import KeyProblem, KeyRefusedError, RoleRefusedError
from engine.payments.refunds import Refund, RefundRefusal, RefundRefusedError
from engine.pipeline.donations import PROCESSING_STATUSES, Donation
from engine.pipeline.outcomes import (
    CampaignRefusal,
    CampaignRefusalReason,
    Overload,
    OverloadError,
    Refusal,
    RefusalReason,
)
from engine.validation import ValidationProblem

_logger = logging.getLogger(__name__)

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "card_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "idempotency_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "api_error",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        type: str | None = None,
        retry_after_s: int | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.type = type or _TYPE_BY_STATUS.get(status, "api_error")
        self.retry_after_s = retry_after_s
        self.extra = extra

    def body(self) -> dict[str, Any]:
        error = {"type": self.type, "code": self.code, "message": self.message, "param": self.param}
        error.update(self.extra)
        return {"error": error}


_IDEMPOTENCY_MISMATCH_MESSAGE = (
    "Keys for idempotent requests can only be used with the same parameters they were first used with."
)

# code, message, Retry-After seconds
_OVERLOAD: dict[Overload, tuple[str, str, int]] = {
    Overload.SHUTTING_DOWN: ("shutting_down", "The engine is restarting; retry shortly.", 2),
    Overload.IN_FLIGHT_FULL: ("overloaded", "Too many donations in progress; retry shortly.", 1),
    Overload.QUEUE_FULL: ("queue_full", "The donation queue is full; retry shortly.", 5),
    Overload.INTAKE_SATURATED: ("overloaded", "Intake is saturated; retry shortly.", 1),
}

DomainError = ValidationProblem | KeyRefusedError | RoleRefusedError | RefundRefusedError | OverloadError
DOMAIN_ERRORS = (ValidationProblem, KeyRefusedError, RoleRefusedError, RefundRefusedError, OverloadError)


def api_error(outcome: DomainError | Refusal | CampaignRefusal) -> ApiError:
    """The one mapping from a domain outcome to its HTTP status and Stripe-shaped error."""
    match outcome:
        case ValidationProblem():
            return ApiError(400, outcome.code, outcome.message, param=outcome.param)
        case KeyRefusedError(problem=KeyProblem.MISSING):
            return ApiError(
                401, "api_key_missing", "Provide your API key as 'Authorization: Bearer <key>'.", param="Authorization"
            )
        case KeyRefusedError():
            return ApiError(401, "api_key_invalid", "Invalid API key provided.", param="Authorization")
        case RoleRefusedError():
            return ApiError(
                403,
                "permission_denied",
                f"This endpoint needs a key with role {' or '.join(r.value for r in outcome.roles_needed)}; this key "
                f"has role {outcome.role.value}.",
            )
        case RefundRefusedError():
            return _refund_error(outcome)
        case OverloadError():
            code, message, retry_after_s = _OVERLOAD[outcome.overload]
            return ApiError(503, code, message, retry_after_s=retry_after_s)
        case Refusal():
            return _refusal_error(outcome)
        case CampaignRefusal():
            return _campaign_refusal_error(outcome)
    raise TypeError(f"no API error for {outcome!r}")


def _campaign_refusal_error(refusal: CampaignRefusal) -> ApiError:
    match refusal.reason:
        case CampaignRefusalReason.CAMPAIGN_MISSING:
            return ApiError(400, "resource_missing", f"No such campaign: '{refusal.campaign_slug}'", param="campaign")
        case CampaignRefusalReason.CURRENCY_MISMATCH if refusal.campaign is not None:
            return ApiError(
                400,
                "currency_mismatch",
                f"Campaign {refusal.campaign_slug} accepts {refusal.campaign.currency} only.",
                param="currency",
            )
        case CampaignRefusalReason.ATTESTATION_REQUIRED:
            return ApiError(
                400,
                "attestation_required",
                "The donor must attest to being a U.S. citizen or lawful permanent resident, and that the "
                "contribution is made from their own funds (donor.citizenship_attested: true).",
                param="donor.citizenship_attested",
            )
    raise TypeError(f"unhandled campaign refusal {refusal!r}")


def _refund_error(error: RefundRefusedError) -> ApiError:
    match error.refusal:
        case RefundRefusal.DONATION_MISSING:
            return ApiError(404, "resource_missing", f"No such donation: '{error.donation_id}'", param="id")
        case RefundRefusal.IDEMPOTENCY_MISMATCH:
            return ApiError(409, "idempotency_key_reused", _IDEMPOTENCY_MISMATCH_MESSAGE, param="Idempotency-Key")
        case RefundRefusal.NOT_REFUNDABLE:
            return ApiError(
                400,
                "donation_not_refundable",
                f"Only succeeded donations can be refunded; this one is {error.donation_status}.",
            )
        case RefundRefusal.AMOUNT_OUT_OF_RANGE:
            amount = error.amount_minor or 0
            return ApiError(
                400,
                "amount_too_large" if amount > 0 else "parameter_invalid",
                f"Refund amount ({amount}) must be between 1 and the unrefunded amount ({error.refundable_minor}).",
                param="amount",
            )
    raise TypeError(f"unhandled refund refusal {error.refusal}")


def _refusal_error(refusal: Refusal) -> ApiError:
    campaign = refusal.campaign
    match refusal.reason:
        case RefusalReason.IDEMPOTENCY_IN_PROGRESS:
            return ApiError(
                409,
                "idempotency_in_progress",
                "A request with this Idempotency-Key is still being processed; retry shortly.",
                retry_after_s=1,
            )
        case RefusalReason.IDEMPOTENCY_MISMATCH:
            return ApiError(409, "idempotency_key_reused", _IDEMPOTENCY_MISMATCH_MESSAGE, param="Idempotency-Key")
        case RefusalReason.LIMIT_EXCEEDED:
            room = refusal.room_minor or 0
            return ApiError(
                422,
                "contribution_limit_exceeded",
                f"This donation would take the donor past the {campaign.contribution_limit_minor} "
                f"{campaign.currency} limit for {campaign.election}; {room} remains.",
                param="amount",
                limit=campaign.contribution_limit_minor,
                aggregate=refusal.aggregate_minor,
                remaining=room,
            )
        case RefusalReason.EMPLOYER_REQUIRED:
            return ApiError(
                400,
                "parameter_missing",
                f"Employer and occupation are required once a donor's total for {campaign.election} passes "
                f"{campaign.itemization_threshold_minor} {campaign.currency}.",
                param="donor.employer",
            )
        case RefusalReason.VELOCITY_EXCEEDED:
            return ApiError(
                429,
                "card_testing_suspected",
                "Too many declined payments from this source recently; try again later.",
                retry_after_s=60,
            )
        case RefusalReason.CHALLENGE_REQUIRED:
            return ApiError(
                428,
                "challenge_required",
                "Many payments from this source were declined recently: complete the challenge and send its token "
                "as 'challenge' with the same request.",
                param="challenge",
                type="invalid_request_error",
            )
    raise TypeError(f"unhandled refusal {refusal.reason}")


def payment_error(donation: Donation) -> ApiError | None:
    """The 402 card error for a declined or failed donation, carrying the donation id."""
    if donation.status == "declined":
        return ApiError(
            402,
            "card_declined",
            donation.failure_message or "Your card was declined.",
            decline_code=donation.decline_code or "generic_decline",
            donation=donation.as_json(),
        )
    if donation.status == "failed":
        return ApiError(
            402,
            "payment_failed",
            donation.failure_message or "The payment could not be processed.",
            type="card_error",
            donation=donation.as_json(),
        )
    return None


def donation_status(donation: Donation) -> int:
    """succeeded → 201; still processing → 202; declined or failed → 402."""
    if donation.status == "succeeded":
        return 201
    if donation.status in PROCESSING_STATUSES:
        return 202
    return 402


def refund_status(refund: Refund) -> int:
    return {"succeeded": 200, "failed": 402}.get(refund.status, 202)  # refunding and pending: 202


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json", headers=headers)


def error_response(error: ApiError) -> web.Response:
    headers = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s is not None else None
    return json_response(error.body(), error.status, headers)


_HTTP_CODES = {404: "resource_missing", 405: "method_not_allowed", 413: "request_too_large"}


def _nul_parameter(request: web.Request) -> str | None:
    """The name of a query or path parameter holding a NUL character (PostgreSQL text cannot), else None."""
    for name, value in request.query.items():
        if "\x00" in name or "\x00" in value:
            return name
    for name, value in request.match_info.items():
        if "\x00" in value:
            return name
    return None


# The database went away: restarted, failed over, crashed, or its socket is gone. OSError covers the socket
# (FileNotFoundError, ConnectionRefusedError, ConnectionResetError); the asyncpg classes cover a connection lost in
# a query (class 08), a server shutting down or starting up (class 57P), and a pooled connection found closed.
_DATABASE_GONE = (OSError, asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError)


def database_unavailable(error: BaseException) -> bool:
    if isinstance(error, aiohttp.ClientError):  # some are OSErrors: a call out of the engine, not the database
        return False
    if isinstance(error, _DATABASE_GONE):
        return True
    # asyncpg says a connection is closed only in the message of its generic InterfaceError, which also reports
    # misuse (a bug, to stay a 500): the message is the one signal it gives.
    return isinstance(error, asyncpg.InterfaceError) and "connection is closed" in str(error)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        nul_parameter = _nul_parameter(request)
        if nul_parameter is not None:
            raise ApiError(
                400,
                "parameter_invalid",
                f"{nul_parameter} must not contain the NUL character (%00).",
                param=nul_parameter,
            )
        return await handler(request)
    except ApiError as error:
        return error_response(error)
    except DOMAIN_ERRORS as error:
        return error_response(api_error(error))
    except web.HTTPException as http_error:
        if http_error.status < 400:
            raise
        code = _HTTP_CODES.get(http_error.status, "http_error")
        return error_response(ApiError(http_error.status, code, http_error.reason))
    except Exception as error:
        if database_unavailable(error):
            # Nothing acknowledged is lost (an answer is sent only after its commit): the client retries, same key.
            _logger.warning("database unavailable in %s %s: %r", request.method, request.path, error)
            return error_response(
                ApiError(503, "database_unavailable", "The database is unavailable; retry shortly.", retry_after_s=5)
            )
        _logger.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(ApiError(500, "internal_error", "An internal error occurred.", type="api_error"))
