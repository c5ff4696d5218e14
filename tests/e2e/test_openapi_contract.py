"""/openapi.json is the contract: every route is described, and the schema's constraints are the validator's.

Each bound is proved at its boundary over HTTP, with the numbers read from the served schema (not from the code):
the schema's largest accepted value is accepted, one more is refused with a Stripe-style 400 naming the field;
likewise lengths, enums and unknown fields (``additionalProperties: false``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from engine.api import models
from engine.keys import Role
from tests.e2e.conftest import Surge, donation

VALIDATION_CODES = {"parameter_invalid", "parameter_missing", "parameter_unknown", "payment_method_invalid"}


async def _spec(surge: Surge) -> dict[str, Any]:
    response = await surge.client.get("/openapi.json")
    assert response.status == 200
    spec: dict[str, Any] = await response.json()
    return spec


def _refused(status: int, body: dict[str, Any], param: str) -> bool:
    error = body.get("error") or {}
    return status == 400 and error.get("code") in VALIDATION_CODES and error.get("param") == param


def _accepted(status: int, body: dict[str, Any]) -> bool:
    """Past the validator: any answer but a validation 400 (a 402 decline or a 422 limit is fine here)."""
    error = body.get("error") or {}
    return not (status == 400 and error.get("code") in VALIDATION_CODES)


async def test_every_route_is_described_and_every_description_is_served(surge: Surge) -> None:
    spec = await _spec(surge)
    assert spec["openapi"].startswith("3.1")
    served = {
        (route.resource.canonical, route.method.lower())
        for route in surge.app.router.routes()
        if route.resource is not None and route.method not in ("HEAD", "OPTIONS", "*")
    }
    described = {(path, method) for path, operations in spec["paths"].items() for method in operations}
    assert served - described == set(), "routes missing from /openapi.json"
    assert described - served == set(), "/openapi.json describes routes that are not served"
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody")
            if body is not None:
                ref = body["content"]["application/json"]["schema"]["$ref"]
                assert ref.rsplit("/", 1)[1] in spec["components"]["schemas"], (path, method)


async def test_amount_bounds(surge: Surge) -> None:
    amount = (await _spec(surge))["components"]["schemas"]["DonationCreate"]["properties"]["amount"]
    low, high = amount["minimum"], amount["maximum"]
    status, body = await surge.donate(donation(low))
    assert status == 201, body
    for accepted in (high,):  # past the validator; the demo campaign's contribution limit answers 422
        status, body = await surge.donate(donation(accepted))
        assert _accepted(status, body), body
    for refused in (low - 1, high + 1):
        status, body = await surge.donate(donation(refused))
        assert _refused(status, body, "amount"), (refused, body)


async def test_donor_text_lengths(surge: Surge) -> None:
    donor = (await _spec(surge))["components"]["schemas"]["Donor"]
    for name, schema in donor["properties"].items():
        if "maxLength" not in schema and not any("maxLength" in option for option in schema.get("anyOf", [])):
            continue
        longest = schema.get("maxLength") or next(o["maxLength"] for o in schema["anyOf"] if "maxLength" in o)
        suffix = "@example.org" if name == "email" else ""
        for length, ok in ((longest, True), (longest + 1, False)):
            value = "a" * (length - len(suffix)) + suffix
            fields = {"first_name": f"Len{length}", name: value}  # a donor of their own: no shared limit
            status, body = await surge.donate(donation(100, **fields))
            if ok:
                assert _accepted(status, body), (name, length, body)
            else:
                assert _refused(status, body, f"donor.{name}"), (name, length, body)


async def test_metadata_limits(surge: Surge) -> None:
    metadata = (await _spec(surge))["components"]["schemas"]["DonationCreate"]["properties"]["metadata"]["anyOf"][0]
    keys_max = metadata["maxProperties"]
    key_length_max = metadata["propertyNames"]["maxLength"]
    value_length_max = next(o["maxLength"] for o in metadata["additionalProperties"]["anyOf"] if "maxLength" in o)
    cases = [
        ({f"k{n}": n for n in range(keys_max)}, True),
        ({f"k{n}": n for n in range(keys_max + 1)}, False),
        ({"k" * key_length_max: "v"}, True),
        ({"k" * (key_length_max + 1): "v"}, False),
        ({"k": "v" * value_length_max}, True),
        ({"k": "v" * (value_length_max + 1)}, False),
        ({"k": True}, False),  # strings or integers only
    ]
    for value, ok in cases:
        body = donation(100)
        body["metadata"] = value
        status, answer = await surge.donate(body)
        assert _accepted(status, answer) if ok else _refused(status, answer, "metadata"), (value, answer)


async def test_unknown_fields_are_refused_where_the_schema_says_so(surge: Surge) -> None:
    schemas = (await _spec(surge))["components"]["schemas"]
    assert schemas["DonationCreate"]["additionalProperties"] is False
    assert schemas["Donor"]["additionalProperties"] is False
    assert schemas["RefundCreate"]["additionalProperties"] is False
    body = donation(100)
    body["surprise"] = 1
    status, answer = await surge.donate(body)
    assert _refused(status, answer, "surprise") and answer["error"]["code"] == "parameter_unknown"
    body = donation(100, nickname="JD")
    status, answer = await surge.donate(body)
    assert _refused(status, answer, "donor.nickname")
    status, paid = await surge.donate(donation(300))
    assert status == 201, paid
    refund = await surge.client.post(
        f"/v1/donations/{paid['id']}/refunds",
        json={"amount": 1, "surprise": 1},
        headers={**surge.auth(Role.FINANCE), "Idempotency-Key": "refund-unknown"},
    )
    assert _refused(refund.status, await refund.json(), "surprise")
    # Where the schema leaves additionalProperties open, unknown fields are ignored.
    assert "additionalProperties" not in schemas["KeyCreate"]
    created = await surge.client.post("/v1/keys", json={"role": "form", "extra": 1}, headers=surge.auth(Role.ADMIN))
    assert created.status == 201


async def test_refund_amount_minimum(surge: Surge) -> None:
    schema = (await _spec(surge))["components"]["schemas"]["RefundCreate"]["properties"]["amount"]["anyOf"][0]
    status, paid = await surge.donate(donation(500))
    assert status == 201, paid
    for amount, ok in ((schema["minimum"] - 1, False), (schema["minimum"], True)):
        response = await surge.client.post(
            f"/v1/donations/{paid['id']}/refunds",
            json={"amount": amount},
            headers={**surge.auth(Role.FINANCE), "Idempotency-Key": f"refund-min-{amount}"},
        )
        answer = await response.json()
        assert _accepted(response.status, answer) if ok else _refused(response.status, answer, "amount"), answer


async def test_enums_and_bounds_of_the_other_bodies(surge: Surge) -> None:
    schemas = (await _spec(surge))["components"]["schemas"]
    admin = surge.auth(Role.ADMIN)
    for role in schemas["KeyCreate"]["properties"]["role"]["enum"]:
        response = await surge.client.post("/v1/keys", json={"role": role}, headers=admin)
        assert response.status == 201, await response.json()
    response = await surge.client.post("/v1/keys", json={"role": "owner"}, headers=admin)
    assert _refused(response.status, await response.json(), "role")

    limit = schemas["CampaignCreate"]["properties"]["contribution_limit"]
    assert limit["exclusiveMinimum"] == 0
    for value, ok in ((1, True), (0, False)):
        campaign = {"slug": f"limit-{value}", "name": "Limit", "election": "2026-general", "contribution_limit": value}
        response = await surge.client.post("/v1/campaigns", json=campaign, headers=admin)
        answer = await response.json()
        assert response.status == 201 if ok else _refused(response.status, answer, "contribution_limit"), answer

    slack = schemas["ReconciliationCreate"]["properties"]["slack_s"]
    window = {"processor": "simulated", "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}
    finance = surge.auth(Role.FINANCE)
    for value, ok in ((slack["maximum"], True), (slack["maximum"] + 1, False), (slack["minimum"] - 1, False)):
        response = await surge.client.post("/v1/reconciliations", json={**window, "slack_s": value}, headers=finance)
        answer = await response.json()
        assert _accepted(response.status, answer) if ok else _refused(response.status, answer, "slack_s"), answer

    memo_max = schemas["ExceptionResolve"]["properties"]["memo"]["maxLength"]
    for length, ok in ((memo_max, True), (memo_max + 1, False)):
        response = await surge.client.post(
            "/v1/reconciliations/exceptions/999999/resolve", json={"memo": "m" * length}, headers=finance
        )
        answer = await response.json()
        if ok:
            assert response.status == 404, answer  # past the validator: there is no such exception
        else:
            assert _refused(response.status, answer, "memo"), answer


async def test_responses_match_their_models(surge: Surge) -> None:
    status, body = await surge.donate(donation(700))
    assert status == 201
    msgspec.convert(body, models.Donation)
    listing = await surge.client.get("/v1/donations", headers=surge.auth(Role.FINANCE))
    msgspec.convert(await listing.json(), models.DonationList)
    campaigns = await surge.client.get("/v1/campaigns", headers=surge.auth(Role.FINANCE))
    msgspec.convert(await campaigns.json(), models.CampaignList)
    refund = await surge.client.post(
        f"/v1/donations/{body['id']}/refunds",
        json={},
        headers={**surge.auth(Role.FINANCE), "Idempotency-Key": "refund-model"},
    )
    msgspec.convert(await refund.json(), models.Refund)
    key = await surge.client.post("/v1/keys", json={"role": "finance"}, headers=surge.auth(Role.ADMIN))
    msgspec.convert(await key.json(), models.ApiKeyCreated)
    status, refused = await surge.donate(donation(0))
    msgspec.convert(refused, models.Error)
