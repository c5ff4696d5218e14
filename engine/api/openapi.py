"""`GET /openapi.json`: the API described for humans and tools (schemathesis, client generators).

Written by hand rather than generated: the handlers parse bodies themselves (exact errors, no framework schema
layer), so this document is the contract; tests check that every route the app serves is described here.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from engine.api.errors import json_response

routes = web.RouteTableDef()

_ERROR = {"$ref": "#/components/responses/Error"}
_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "Unique per request intent; retries with the same key and body return the same result.",
}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_DONATION = {
    "description": "The donation",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Donation"}}},
}


def _op(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": {**responses, "default": _ERROR}, **extra}


SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Surge", "version": "0.1.0", "description": "Donation processing engine."},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "responses": {
            "Error": {
                "description": "Stripe-shaped error",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["type", "code", "message"],
                        "properties": {
                            "type": {"type": "string"},
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                            "param": {"type": "string", "nullable": True},
                            "decline_code": {"type": "string"},
                        },
                    }
                },
            },
            "Donor": {
                "type": "object",
                "required": [
                    "first_name",
                    "last_name",
                    "email",
                    "address_line1",
                    "city",
                    "state",
                    "postal_code",
                    "country",
                ],
                "properties": {
                    name: {"type": "string", "maxLength": 200}
                    for name in (
                        "first_name",
                        "last_name",
                        "email",
                        "address_line1",
                        "address_line2",
                        "city",
                        "state",
                        "postal_code",
                        "country",
                        "employer",
                        "occupation",
                        "phone",
                    )
                }
                | {"citizenship_attested": {"type": "boolean"}},
            },
            "DonationCreate": {
                "type": "object",
                "required": ["amount", "currency", "campaign", "donor", "payment_method"],
                "properties": {
                    "amount": {"type": "integer", "minimum": 1, "description": "Minor units (cents)."},
                    "currency": {"type": "string", "pattern": "^[A-Za-z]{3}$"},
                    "campaign": {"type": "string"},
                    "donor": {"$ref": "#/components/schemas/Donor"},
                    "payment_method": {"type": "string", "pattern": "^pm_[A-Za-z0-9_]+$"},
                    "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
            "Donation": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "object": {"type": "string", "enum": ["donation"]},
                    "status": {"type": "string", "enum": ["processing", "succeeded", "declined", "failed"]},
                    "amount": {"type": "integer"},
                    "amount_refunded": {"type": "integer"},
                    "currency": {"type": "string"},
                    "campaign": {"type": "string"},
                    "processor": {"type": "string", "nullable": True},
                    "processor_reference": {"type": "string", "nullable": True},
                    "fee": {"type": "integer", "nullable": True},
                },
            },
            "Campaign": {
                "type": "object",
                "required": ["slug", "name", "election"],
                "properties": {
                    "slug": {"type": "string"},
                    "name": {"type": "string"},
                    "currency": {"type": "string"},
                    "election": {"type": "string"},
                    "contribution_limit": {"type": "integer"},
                    "itemization_threshold": {"type": "integer"},
                    "require_attestation": {"type": "boolean"},
                    "allowed_origins": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/v1/donations": {
            "post": _op(
                "Create a donation (form key)",
                {
                    "201": _DONATION,
                    "202": {"description": "Accepted; the charge outcome comes later (status processing)"},
                    "402": {"description": "Declined (card_error with decline_code and the donation)"},
                    "409": {"description": "Idempotency key reused with another body, or still in progress"},
                    "422": {"description": "Contribution limit exceeded (remaining room included)"},
                    "429": {"description": "Card-testing velocity exceeded (Retry-After)"},
                    "503": {"description": "Overloaded (Retry-After)"},
                },
                parameters=[_IDEMPOTENCY],
                requestBody={
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DonationCreate"}}},
                },
            ),
            "get": _op("List donations (finance)", {"200": {"description": "A page of donations, newest first"}}),
        },
        "/v1/donations/{id}": {
            "get": _op("Read a donation (its form key, or finance)", {"200": _DONATION}, parameters=[_ID])
        },
        "/v1/donations/{id}/refunds": {
            "post": _op(
                "Refund all or part of a donation (finance)",
                {"200": {"description": "Refunded"}, "202": {"description": "Refund pending at the processor"}},
                parameters=[_ID, _IDEMPOTENCY],
                requestBody={
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {"type": "object", "properties": {"amount": {"type": "integer", "minimum": 1}}}
                        }
                    },
                },
            )
        },
        "/v1/campaigns": {
            "post": _op(
                "Create a campaign (admin)",
                {"201": {"description": "Created"}},
                requestBody={"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Campaign"}}}},
            ),
            "get": _op("List campaigns (finance)", {"200": {"description": "Campaigns"}}),
        },
        "/v1/keys": {"post": _op("Create an API key (admin)", {"201": {"description": "The key, shown once"}})},
        "/v1/webhooks/{processor}": {
            "post": _op(
                "Processor webhook (signature-verified, processed once per event id)",
                {"200": {"description": "Received"}},
                parameters=[{"name": "processor", "in": "path", "required": True, "schema": {"type": "string"}}],
                security=[],
            )
        },
        "/v1/ledger/accounts/{code}/balance": {
            "get": _op(
                "Account balance, optionally as of a past time (finance)",
                {"200": {"description": "Balance"}},
                parameters=[
                    {"name": "code", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "as_of", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                ],
            )
        },
        "/v1/ledger/accounts/{code}/entries": {
            "get": _op(
                "An account's entries, newest first (finance)",
                {"200": {"description": "Entries"}},
                parameters=[{"name": "code", "in": "path", "required": True, "schema": {"type": "string"}}],
            )
        },
        "/v1/ledger/trial-balance": {"get": _op("Trial balance (finance)", {"200": {"description": "Trial balance"}})},
        # Finance (engine/api/finance.py): every list and report takes ?format=json|csv.
        "/v1/reconciliations": {
            "post": _op(
                "Reconcile a processor over a window (finance)",
                {"201": {"description": "The recorded run with its exceptions"}, "503": {"description": "Processor"}},
                requestBody={
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["processor", "from", "to"],
                                "properties": {
                                    "processor": {"type": "string"},
                                    "from": {"type": "string", "format": "date-time"},
                                    "to": {"type": "string", "format": "date-time"},
                                    "slack_s": {"type": "integer", "minimum": 0, "default": 3600},
                                },
                            }
                        }
                    },
                },
            ),
            "get": _op("Reconciliation runs, newest first (finance)", {"200": {"description": "Runs"}}),
        },
        "/v1/reconciliations/{id}": {
            "get": _op(
                "A run and its exceptions; ?format=csv for the exceptions as CSV (finance)",
                {"200": {"description": "The run"}},
                parameters=[_ID],
            )
        },
        "/v1/reconciliations/exceptions": {
            "get": _op(
                "Exceptions, filtered by ?status=open|resolved|cleared and ?processor (finance)",
                {"200": {"description": "Exceptions"}},
            )
        },
        "/v1/reconciliations/exceptions/{id}/resolve": {
            "post": _op(
                "Resolve an exception with an adjusting entry and a memo; without legs, the proposed one (finance)",
                {"201": {"description": "The resolved exception"}, "409": {"description": "Already resolved"}},
                parameters=[_ID],
                requestBody={
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["memo"],
                                "properties": {
                                    "memo": {"type": "string", "maxLength": 2000},
                                    "legs": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "properties": {
                                                "account": {"type": "string"},
                                                "amount": {"type": "integer", "description": "Debit positive"},
                                                "currency": {"type": "string"},
                                            },
                                        },
                                    },
                                },
                            }
                        }
                    },
                },
            )
        },
        "/v1/reports/trial-balance": {
            "get": _op("Trial balance, now or ?as_of (finance)", {"200": {"description": "Report"}})
        },
        "/v1/reports/campaign-days": {
            "get": _op(
                "Per campaign and day: gross, refunds, disputes, fees, net; ?campaign&from&to (finance)",
                {"200": {"description": "Report"}},
            )
        },
        "/v1/reports/donor-aggregates": {
            "get": _op(
                "Donor aggregates per election; ?campaign&election&limit&threshold (finance)",
                {"200": {"description": "Report"}},
            )
        },
        "/v1/reports/schedule-a": {
            "get": _op(
                "Itemized receipts, FEC Form 3 Schedule A shape; ?campaign&election&from&to&threshold&limit (finance)",
                {"200": {"description": "Report"}},
            )
        },
        "/dashboard": {
            "get": _op(
                "Finance dashboard (HTML; session cookie from /dashboard/login)",
                {"200": {"description": "HTML"}, "303": {"description": "To the sign-in form"}},
                security=[],
            )
        },
        "/dashboard/login": {
            "get": _op("Dashboard sign-in form (HTML)", {"200": {"description": "HTML"}}, security=[]),
            "post": _op(
                "Exchange a finance key (form field key) for an HttpOnly, SameSite=Strict session cookie",
                {"303": {"description": "Signed in"}, "401": {"description": "Not a finance key"}},
                security=[],
            ),
        },
        "/dashboard/logout": {
            "post": _op("End the dashboard session", {"303": {"description": "Signed out"}}, security=[])
        },
        "/healthz": {"get": _op("Liveness", {"200": {"description": "Alive"}}, security=[])},
        "/readyz": {"get": _op("Readiness: database reachable", {"200": {"description": "Ready"}}, security=[])},
        "/metrics": {"get": _op("Prometheus metrics", {"200": {"description": "Metrics text"}}, security=[])},
        "/openapi.json": {"get": _op("This document", {"200": {"description": "OpenAPI 3"}}, security=[])},
    },
}


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(SPEC)
