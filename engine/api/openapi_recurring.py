"""The recurring routes' part of `/openapi.json` (engine/api/openapi.py merges it): plans, links, pages, dashboard."""

from __future__ import annotations

from typing import Any

from engine.api.requests import RECURRING_NOTICES_LIMIT, RECURRING_PLANS_LIMIT, PageLimit

_ERROR = {"$ref": "#/components/responses/Error"}
_IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": True, "schema": {"type": "string"}}


def _op(summary: str, responses: dict[str, Any], *path: str, public: bool = False, **extra: Any) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": {**responses, "default": _ERROR}, **extra}
    parameters = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in path]
    if parameters:
        operation["parameters"] = [*parameters, *operation.get("parameters", [])]
    if public:
        operation["security"] = []
    return operation


def _query(*names: str, limit: PageLimit | None = None) -> list[dict[str, Any]]:
    """String query parameters, then ``limit`` stated from the handler's own :class:`PageLimit`."""
    parameters = [{"name": n, "in": "query", "required": False, "schema": {"type": "string"}} for n in names]
    if limit is not None:
        parameters.append({"name": "limit", "in": "query", "required": False, "schema": limit.schema()})
    return parameters


_OK = {"200": {"description": "OK"}}
_PAGE = {
    "200": {"description": "HTML"},
    "400": {"description": "Link not valid (HTML)"},
    "410": {"description": "Link expired (HTML)"},
}
_PLAN = {
    "200": {"description": "The plan"},
    "404": {"description": "No such plan"},
    "409": {"description": "The plan's status does not allow it"},
}

RECURRING_PATHS: dict[str, Any] = {
    "/v1/recurring/plans": {
        "post": _op(
            "Save the donor's card and start a recurring plan (form or finance key): a donation's body plus "
            "interval (month|week), installments (absent: until cancelled) and start (finance keys)",
            {
                "201": {"description": "The plan, with manage_url"},
                "200": {"description": "Replay: the plan"},
                "402": {"description": "The card could not be saved"},
            },
            parameters=[_IDEMPOTENCY],
        ),
        "get": _op(
            "List plans (finance)",
            _OK,
            parameters=_query("campaign", "status", "email", "starting_after", limit=RECURRING_PLANS_LIMIT),
        ),
    },
    "/v1/recurring/plans/{id}": {"get": _op("A plan (finance)", _PLAN, "id")},
    "/v1/recurring/plans/{id}/installments": {
        "get": _op("A plan's periods with every attempt and outcome (finance)", _PLAN, "id")
    },
    "/v1/recurring/plans/{id}/cancel": {"post": _op("Cancel a plan (finance)", _PLAN, "id")},
    "/v1/recurring/plans/{id}/pause": {"post": _op("Pause a plan (finance)", _PLAN, "id")},
    "/v1/recurring/plans/{id}/resume": {"post": _op("Resume a paused plan (finance)", _PLAN, "id")},
    "/v1/recurring/plans/{id}/manage-link": {
        "get": _op("A signed link for the donor to change or cancel the plan (finance)", _PLAN, "id")
    },
    "/v1/recurring/quick-links": {
        "post": _op(
            "A signed Quick Donate link for a saved card: saved_method, campaign, amount, refcode (finance)",
            {"201": {"description": "The link"}},
        )
    },
    "/v1/recurring/notices": {
        "get": _op(
            "What donors and campaigns were told (finance)",
            _OK,
            parameters=_query("campaign", limit=RECURRING_NOTICES_LIMIT),
        )
    },
    "/v1/reports/recurring": {
        "get": _op("Per campaign: active plans, monthly recurring amount, installments, churn (finance)", _OK)
    },
    "/v1/campaigns/{slug}/recurring": {
        "put": _op("A campaign's recurring settings: on_limit, quick_donate_confirm_above (admin)", _OK, "slug")
    },
    "/quick/{token}": {
        "get": _op("Follow a Quick Donate link (HTML)", _PAGE, "token", public=True),
        "post": _op("Confirm a Quick Donate gift (HTML)", _PAGE, "token", public=True),
    },
    "/recurring/manage/{token}": {"get": _op("Manage a recurring gift (HTML)", _PAGE, "token", public=True)},
    "/recurring/manage/{token}/cancel": {"post": _op("Cancel the recurring gift (HTML)", _PAGE, "token", public=True)},
    "/recurring/manage/{token}/amount": {
        "post": _op("Change its amount (form: amount) (HTML)", _PAGE, "token", public=True)
    },
    "/recurring/profile": {
        "post": _op(
            "Email the donor's profile link (form: email) (HTML)", {"200": {"description": "HTML"}}, public=True
        )
    },
    "/recurring/profile/{token}": {"get": _op("The donor's saved cards (HTML)", _PAGE, "token", public=True)},
    "/recurring/profile/{token}/methods/{method}/delete": {
        "post": _op("Delete a saved card (HTML)", _PAGE, "token", "method", public=True)
    },
    "/dashboard/recurring": {
        "get": _op("Recurring plans and their report (HTML)", {"200": {"description": "HTML"}}, security=[])
    },
    "/dashboard/recurring/{id}": {
        "get": _op("A plan's periods and attempts (HTML)", {"200": {"description": "HTML"}}, "id", security=[])
    },
    "/dashboard/recurring/{id}/{action}": {
        "post": _op(
            "Pause, resume or cancel a plan (HTML form)", {"303": {"description": "Back"}}, "id", "action", security=[]
        )
    },
}
