"""Stripe-shaped errors on the wire: ``{"error": {"type", "code", "message", "param", ...}}``.

Handlers raise :class:`ApiError`; the middleware turns it (and aiohttp's own HTTP errors) into the JSON body and
status. Anything else is a bug: logged with its traceback and answered 500 with no detail.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web

from engine.api.handler import Handler

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


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json", headers=headers)


def error_response(error: ApiError) -> web.Response:
    headers = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s is not None else None
    return json_response(error.body(), error.status, headers)


_HTTP_CODES = {404: "resource_missing", 405: "method_not_allowed", 413: "request_too_large"}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(error)
    except web.HTTPException as http_error:
        if http_error.status < 400:
            raise
        code = _HTTP_CODES.get(http_error.status, "http_error")
        return error_response(ApiError(http_error.status, code, http_error.reason))
    except Exception:
        _logger.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(ApiError(500, "internal_error", "An internal error occurred.", type="api_error"))
