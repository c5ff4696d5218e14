"""`GET /openapi.json`: the API described for humans and tools (schemathesis, client generators), OpenAPI 3.1.

The bodies' schemas are generated from the same msgspec Structs the server decodes requests into
(``engine.api.models``, via ``msgspec.json.schema_components``): bounds, lengths, patterns, enums and
``additionalProperties: false`` are what the validator checks, not a copy of it. The operations, parameters and
statuses are listed here; a test checks that every route the app serves is described and that the schema's
constraints hold at their boundaries.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from engine.api.errors import json_response
from engine.api.finance import AMOUNT_PARAM_MAX
from engine.api.models import IDEMPOTENCY_KEY_LENGTH_MAX, REQUEST_MODELS, RESPONSE_MODELS
from engine.api.openapi_recurring import RECURRING_PATHS
from engine.api.requests import (
    ACCOUNT_ENTRIES_LIMIT,
    AUDIT_EVENTS_LIMIT,
    DONATIONS_LIMIT,
    RECONCILIATION_EXCEPTIONS_LIMIT,
    RECONCILIATIONS_LIMIT,
    PageLimit,
)

routes = web.RouteTableDef()

_REF = "#/components/schemas/{name}"


def _schemas() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(REQUEST_MODELS + RESPONSE_MODELS, ref_template=_REF)
    return components


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": _REF.format(name=name)}}}}


def _body(name: str, *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": {"$ref": _REF.format(name=name)}}}}


def _query(name: str, schema: dict[str, Any], description: str | None = None) -> dict[str, Any]:
    parameter: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
    if description:
        parameter["description"] = description
    return parameter


def _path(name: str, pattern: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if pattern:
        schema["pattern"] = pattern
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _limit(limit: PageLimit) -> dict[str, Any]:
    return _query("limit", limit.schema())


_ERROR = {"$ref": "#/components/responses/Error"}
_HTML_PAGE = {"200": {"description": "HTML"}, "303": {"description": "To the sign-in form"}}
_FORM_POSTED = {
    "200": {"description": "HTML"},
    "303": {"description": "Back, saying what happened; or to the sign-in form"},
    "403": {"description": "Not posted from this dashboard, or not an admin key (HTML)"},
}
_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "schema": {"type": "string", "pattern": f"^[!-~]{{1,{IDEMPOTENCY_KEY_LENGTH_MAX}}}$"},
    "description": "Unique per request intent; retries with the same key and body return the same result.",
}
_ID = _path("id")
_NUMERIC_ID = _path("id", r"^[0-9]{1,18}$")  # a bigint: a longer one is no such id (404)
_FORMAT = _query("format", {"enum": ["json", "csv"]}, "json (minor units) or csv (decimal amounts)")
_DAY = {"type": "string", "format": "date"}
_INSTANT = {"type": "string", "format": "date-time", "description": "ISO 8601 with a time zone"}
_AMOUNT = {"type": "integer", "minimum": 0, "maximum": AMOUNT_PARAM_MAX}


def _op(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": {**responses, "default": _ERROR}, **extra}


def _report(summary: str, *parameters: dict[str, Any]) -> dict[str, Any]:
    return {"get": _op(summary, {"200": {"description": "Report"}}, parameters=[_FORMAT, *parameters])}


_PATHS: dict[str, Any] = {
    "/v1/donations": {
        "post": _op(
            "Create a donation (form key)",
            {
                "201": _json("Donation", "Charged"),
                "202": _json("Donation", "Accepted; the charge outcome comes later (status processing)"),
                "402": {"description": "Declined (card_error with decline_code and the donation)"},
                "409": {"description": "Idempotency key reused with another body, or still in progress"},
                "422": {"description": "Contribution limit exceeded (remaining room included)"},
                "428": {"description": "Suspicious source: send a passed challenge's token as 'challenge'"},
                "429": {"description": "Card testing refused (Retry-After)"},
                "503": {"description": "Overloaded (Retry-After)"},
            },
            parameters=[_IDEMPOTENCY],
            requestBody=_body("DonationCreate"),
        ),
        "get": _op(
            "List donations (finance)",
            {"200": _json("DonationList", "A page of donations, newest first")},
            parameters=[
                _limit(DONATIONS_LIMIT),
                _query("campaign", {"type": "string"}),
                _query("starting_after", {"type": "string"}),
                _query("needs_review", {"type": "string", "enum": ["true", "false"]}),
            ],
        ),
    },
    "/v1/donations/{id}": {
        "get": _op(
            "Read a donation (its form key, or finance)", {"200": _json("Donation", "The donation")}, parameters=[_ID]
        )
    },
    "/v1/donations/{id}/refunds": {
        "post": _op(
            "Refund all or part of a donation (finance)",
            {"200": _json("Refund", "Refunded"), "202": _json("Refund", "Refund pending at the processor")},
            parameters=[_ID, _IDEMPOTENCY],
            requestBody=_body("RefundCreate", required=False),
        )
    },
    "/v1/campaigns": {
        "post": _op(
            "Create a campaign (admin)", {"201": _json("Campaign", "Created")}, requestBody=_body("CampaignCreate")
        ),
        "get": _op("List campaigns (finance)", {"200": _json("CampaignList", "Campaigns")}),
    },
    "/v1/keys": {
        "post": _op(
            "Create an API key (admin)",
            {"201": _json("ApiKeyCreated", "The key, shown once")},
            requestBody=_body("KeyCreate"),
        ),
        "get": _op("List API keys, never their secrets (admin)", {"200": {"description": "Keys"}}),
    },
    "/v1/keys/{id}": {
        "delete": _op(
            "Revoke an API key and end its dashboard sessions (admin)",
            {"200": {"description": "The key, revoked"}, "404": {"description": "No such key"}},
            parameters=[_ID],
        )
    },
    "/v1/audit-events": {
        "get": _op(
            "The audit trail: who did what, when, from where; newest first (finance)",
            {"200": {"description": "A page of audit events"}},
            parameters=[
                _limit(AUDIT_EVENTS_LIMIT),
                _query("starting_after", {"type": "string", "pattern": "^[0-9]{1,18}$"}),
                _query("action", {"type": "string"}),
                _query("subject", {"type": "string"}),
            ],
        )
    },
    "/v1/webhooks/{processor}": {
        "post": _op(
            "Processor webhook (signature-verified, processed once per event id)",
            {"200": {"description": "Received"}},
            parameters=[_path("processor")],
            security=[],
        )
    },
    "/v1/ledger/accounts/{code}/balance": {
        "get": _op(
            "Account balance, optionally as of a past time (finance)",
            {"200": {"description": "Balance"}},
            parameters=[_path("code"), _query("as_of", _INSTANT)],
        )
    },
    "/v1/ledger/accounts/{code}/entries": {
        "get": _op(
            "An account's entries, newest first (finance)",
            {"200": {"description": "Entries"}},
            parameters=[_path("code"), _limit(ACCOUNT_ENTRIES_LIMIT), _query("starting_after", {"type": "string"})],
        )
    },
    "/v1/ledger/trial-balance": {"get": _op("Trial balance (finance)", {"200": {"description": "Trial balance"}})},
    # Finance (engine/api/finance.py): every list and report takes ?format=json|csv.
    "/v1/reconciliations": {
        "post": _op(
            "Reconcile a processor over a window (finance)",
            {"201": {"description": "The recorded run with its exceptions"}, "503": {"description": "Processor"}},
            requestBody=_body("ReconciliationCreate"),
        ),
        "get": _op(
            "Reconciliation runs, newest first (finance)",
            {"200": {"description": "Runs"}},
            parameters=[_limit(RECONCILIATIONS_LIMIT), _query("processor", {"type": "string"})],
        ),
    },
    "/v1/reconciliations/{id}": {
        "get": _op(
            "A run and its exceptions; ?format=csv for the exceptions as CSV (finance)",
            {"200": {"description": "The run"}},
            parameters=[_NUMERIC_ID, _FORMAT],
        )
    },
    "/v1/reconciliations/exceptions": {
        "get": _op(
            "Exceptions, filtered by ?status=open|resolved|cleared and ?processor (finance)",
            {"200": {"description": "Exceptions"}},
            parameters=[
                _query("status", {"enum": ["open", "resolved", "cleared"]}),
                _query("processor", {"type": "string"}),
                _limit(RECONCILIATION_EXCEPTIONS_LIMIT),
                _FORMAT,
            ],
        )
    },
    "/v1/reconciliations/exceptions/{id}/resolve": {
        "post": _op(
            "Resolve an exception with an adjusting entry and a memo; without legs, the proposed one (finance)",
            {"201": {"description": "The resolved exception"}, "409": {"description": "Already resolved"}},
            parameters=[_NUMERIC_ID],
            requestBody=_body("ExceptionResolve"),
        )
    },
    "/v1/reports/trial-balance": _report("Trial balance, now or ?as_of (finance)", _query("as_of", _INSTANT)),
    "/v1/reports/campaign-days": _report(
        "Per campaign and day: gross, refunds, disputes, fees, net (finance)",
        _query("campaign", {"type": "string"}),
        _query("from", _DAY),
        _query("to", _DAY),
    ),
    "/v1/reports/donor-aggregates": _report(
        "Donor aggregates per election (finance)",
        _query("campaign", {"type": "string"}),
        _query("election", {"type": "string"}),
        _query("limit", _AMOUNT, "Contribution limit, minor units (default: the campaign's)"),
        _query("threshold", _AMOUNT, "Itemization threshold, minor units (default: the campaign's)"),
    ),
    "/v1/reports/schedule-a": _report(
        "Itemized receipts, FEC Form 3 Schedule A shape (finance)",
        _query("campaign", {"type": "string"}),
        _query("election", {"type": "string"}),
        _query("from", _DAY),
        _query("to", _DAY),
        _query("threshold", _AMOUNT),
        _query("limit", _AMOUNT),
    ),
    "/dashboard": {
        "get": _op(
            "Finance dashboard (HTML; session cookie from /dashboard/login)",
            _HTML_PAGE,
            security=[],
        )
    },
    "/dashboard/login": {
        "get": _op("Dashboard sign-in form (HTML)", {"200": {"description": "HTML"}}, security=[]),
        "post": _op(
            "Exchange a finance key (form field key) for an HttpOnly, SameSite=Strict session cookie",
            {
                "303": {"description": "Signed in"},
                "400": {"description": "The form could not be read as its Content-Type claims (HTML)"},
                "401": {"description": "Not a finance key (HTML)"},
                "403": {"description": "Cross-origin sign-in (HTML)"},
            },
            security=[],
        ),
    },
    "/dashboard/audit": {
        "get": _op(
            "The audit trail (HTML; session cookie from /dashboard/login), 100 a page, older with ?before",
            _HTML_PAGE,
            parameters=[_query("before", {"type": "string"})],
            security=[],
        )
    },
    "/dashboard/donations": {
        "get": _op(
            "Find donations (HTML): ?q= id, email, name, postal code or processor reference, campaign, amount, dates",
            _HTML_PAGE,
            parameters=[
                _query(name, {"type": "string"})
                for name in ("q", "campaign", "refcode", "amount", "from", "to", "after")
            ],
            security=[],
        )
    },
    "/dashboard/donations/{id}": {
        "get": _op(
            "A donation: its history, refunds, processor events, ledger entries (HTML)",
            {
                "200": {"description": "HTML"},
                "303": {"description": "To the sign-in form"},
                "404": {"description": "HTML"},
            },
            parameters=[_ID, _query("notice", {"type": "string"})],
            security=[],
        )
    },
    "/dashboard/donations/{id}/refund": {
        "post": _op(
            "Refund from the dashboard: a confirmation page, then the refund (form with the session CSRF token)",
            {
                "200": {"description": "The confirmation page (HTML)"},
                "303": {"description": "Done, or to the sign-in form"},
                "403": {"description": "Not posted from this dashboard (HTML)"},
            },
            parameters=[_ID],
            security=[],
        )
    },
    "/dashboard/reconciliations": {
        "get": _op(
            "Reconciliation runs and open exceptions, with the forms to run and resolve (HTML)",
            _HTML_PAGE,
            parameters=[_query("notice", {"type": "string"})],
            security=[],
        ),
        "post": _op(
            "Run a reconciliation (form: processor, from, to, the session CSRF token)",
            {"303": {"description": "To the run, or back with why not"}, "403": {"description": "Not from here"}},
            security=[],
        ),
    },
    "/dashboard/reconciliations/{id}": {
        "get": _op(
            "One run, its exceptions and the forms to resolve the open ones (HTML)",
            {
                "200": {"description": "HTML"},
                "303": {"description": "To the sign-in form"},
                "404": {"description": "HTML"},
            },
            parameters=[_NUMERIC_ID],
            security=[],
        )
    },
    "/dashboard/exceptions/{id}/resolve": {
        "post": _op(
            "Resolve an exception with the proposed entry and a memo (form with the session CSRF token)",
            {"303": {"description": "Back, saying what happened"}, "403": {"description": "Not from here"}},
            parameters=[_NUMERIC_ID],
            security=[],
        )
    },
    "/dashboard/reports": {
        "get": _op(
            "The report export form (HTML)",
            _HTML_PAGE,
            security=[],
        )
    },
    "/dashboard/reports/export": {
        "get": _op(
            "A report as CSV for a date range and campaign",
            {
                "200": {"description": "CSV"},
                "303": {"description": "To the sign-in form"},
                "404": {"description": "No such report"},
            },
            parameters=[_query(name, {"type": "string"}) for name in ("report", "campaign", "from", "to")],
            security=[],
        )
    },
    "/dashboard/admin": {
        "get": _op(
            "Administration (HTML, admin keys): campaigns, keys",
            {**_HTML_PAGE, "403": {"description": "Not an admin key (HTML)"}},
            parameters=[_query("notice", {"type": "string"})],
            security=[],
        )
    },
    "/dashboard/admin/campaigns": {
        "post": _op("Open a campaign (form, admin)", _FORM_POSTED, security=[]),
    },
    "/dashboard/admin/keys": {
        "post": _op("Issue a key: the secret on the answer page, once (form, admin)", _FORM_POSTED, security=[]),
    },
    "/dashboard/admin/keys/{id}/revoke": {
        "post": _op("Revoke a key (form, admin)", _FORM_POSTED, parameters=[_ID], security=[]),
    },
    "/dashboard/logout": {
        "post": _op("End the dashboard session", {"303": {"description": "Signed out"}}, security=[])
    },
    # The donation page (engine/api/donor_page.py) and the simulated processor's tokenizer (simulated_tokens.py).
    "/v1/reports/refcodes": _report(
        "Per campaign and refcode (the donation page's ?refcode=): donations, gross, refunds, disputes, net, "
        "declines (finance)",
        _query("campaign", {"type": "string"}),
        _query("from", _DAY),
        _query("to", _DAY),
    ),
    "/donate/{campaign}": {
        "get": _op(
            "The embeddable donation page (HTML); ?amount=, ?refcode= and donor fields prefill it",
            {"200": {"description": "HTML"}, "404": {"description": "No such campaign"}},
            parameters=[_path("campaign", "^[a-z0-9][a-z0-9-]{0,62}$")],
            security=[],
        )
    },
    "/donate/static/{name}": {
        "get": _op(
            "The donation page's script, stylesheet and embedding script",
            {"200": {"description": "JavaScript or CSS"}, "404": {"description": "No such file"}},
            parameters=[_path("name")],
            security=[],
        )
    },
    "/simulated/v1/payment_methods": {
        "post": _op(
            "Tokenize a Stripe test card for the simulated processor, as Stripe's POST /v1/payment_methods (form "
            "body: type=card, card[number], card[exp_month], card[exp_year], card[cvc]; form key)",
            {
                "200": {"description": "The payment method ({id: pm_…})"},
                "402": {"description": "The card cannot be tokenized (card_error)"},
                "404": {"description": "No simulated processor is configured"},
            },
        )
    },
    "/healthz": {"get": _op("Liveness", {"200": {"description": "Alive"}}, security=[])},
    "/readyz": {"get": _op("Readiness: database reachable", {"200": {"description": "Ready"}}, security=[])},
    "/metrics": {"get": _op("Prometheus metrics", {"200": {"description": "Metrics text"}}, security=[])},
    "/openapi.json": {"get": _op("This document", {"200": {"description": "OpenAPI 3.1"}}, security=[])},
}

_PATHS.update(RECURRING_PATHS)  # engine/api/openapi_recurring.py

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Surge", "version": "0.1.0", "description": "Donation processing engine."},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "responses": {"Error": _json("Error", "Stripe-shaped error")},
        "schemas": _schemas(),
    },
    "security": [{"bearer": []}],
    "paths": _PATHS,
}


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(SPEC)
