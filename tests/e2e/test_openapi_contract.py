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


def _leg(**overrides: Any) -> dict[str, Any]:
    return {"account": "clearing:simulated:USD", "amount": 1, "currency": "usd", **overrides}


async def test_legs_bounds(surge: Surge) -> None:
    """Each leg's constraint at its boundary: past the validator the missing exception answers 404."""
    schemas = (await _spec(surge))["components"]["schemas"]
    legs = schemas["ExceptionResolve"]["properties"]["legs"]["anyOf"][0]
    leg = schemas[legs["items"]["$ref"].rsplit("/", 1)[1]]
    amount = leg["properties"]["amount"]
    assert leg["required"] == ["account", "amount", "currency"] and amount["not"] == {"const": 0}
    low, high = legs["minItems"], legs["maxItems"]
    account_min = leg["properties"]["account"]["minLength"]
    cases: list[tuple[Any, bool]] = [
        ([_leg()] * low, True),
        ([_leg()] * (low - 1), False),
        ([_leg()] * high, True),
        ([_leg()] * (high + 1), False),
        ([_leg(account="a" * account_min)] * low, True),
        ([_leg(account="a" * (account_min - 1))] * low, False),
        ([_leg(amount=amount["maximum"]), _leg(amount=amount["minimum"])], True),
        ([_leg(amount=amount["maximum"] + 1), _leg()], False),
        ([_leg(amount=amount["minimum"] - 1), _leg()], False),
        ([_leg(amount=0)] * low, False),  # the schema's "not const 0": checked_legs
        ([_leg(amount=1.5)] * low, False),
        ([_leg(currency="USD")] * low, True),
        ([_leg(currency="US")] * low, False),
        ([_leg(currency="usdd")] * low, False),
        ([{"account": "a", "amount": 1}] * low, False),
        ("two legs", False),
    ]
    for value, ok in cases:
        response = await surge.client.post(
            "/v1/reconciliations/exceptions/999999/resolve",
            json={"memo": "why", "legs": value},
            headers=surge.auth(Role.FINANCE),
        )
        answer = await response.json()
        if ok:
            assert response.status == 404, (value, answer)
        else:
            # Past 64 bits the JSON reader refuses the number itself before the model (engine.api.validation: a
            # 19-digit number may even be taken for a card number); either way a 400 naming the leg.
            assert response.status == 400 and answer["error"]["param"].startswith("legs"), (value, answer)
            if abs(value[0]["amount"] if isinstance(value, list) and value and "amount" in value[0] else 0) < 2**63:
                assert answer["error"]["code"] == "adjustment_invalid", (value, answer)


async def test_campaign_create_bounds(surge: Surge) -> None:
    schema = (await _spec(surge))["components"]["schemas"]["CampaignCreate"]
    properties = schema["properties"]
    slug_pattern = properties["slug"]["pattern"]
    assert slug_pattern == "^[a-z0-9][a-z0-9-]{0,62}$"  # the cases below are this pattern's edges
    name_max, election_max = properties["name"]["maxLength"], properties["election"]["maxLength"]
    assert properties["name"]["minLength"] == properties["election"]["minLength"] == 1
    base = {"name": "Bounds", "election": "2026-general"}
    cases: list[tuple[dict[str, Any], str | None]] = [
        ({"slug": "a" * 63}, None),
        ({"slug": "a" * 64}, "slug"),
        ({"slug": "0-a"}, None),
        ({"slug": "-a"}, "slug"),
        ({"slug": "Upper"}, "slug"),
        ({"slug": "under_score"}, "slug"),
        ({"slug": "name-max", "name": "n" * name_max}, None),
        ({"slug": "name-long", "name": "n" * (name_max + 1)}, "name"),
        ({"slug": "name-empty", "name": ""}, "name"),
        ({"slug": "election-max", "election": "e" * election_max}, None),
        ({"slug": "election-long", "election": "e" * (election_max + 1)}, "election"),
        ({"slug": "election-empty", "election": ""}, "election"),
        ({"slug": "currency-eur", "currency": "eur"}, None),
        ({"slug": "currency-jpy", "currency": "JPY"}, None),
        ({"slug": "currency-made-up", "currency": "XQZ"}, "currency"),  # three letters, not in the ISO table
        ({"slug": "currency-long", "currency": "usdd"}, "currency"),
        ({"slug": "unknown-field", "nickname": "ignored"}, None),  # additionalProperties open: ignored
    ]
    assert "additionalProperties" not in schema
    for fields, refused in cases:
        response = await surge.client.post("/v1/campaigns", json={**base, **fields}, headers=surge.auth(Role.ADMIN))
        answer = await response.json()
        if refused is None:
            assert response.status == 201, (fields, answer)
        else:
            assert _refused(response.status, answer, refused), (fields, answer)


async def test_payment_method_refcode_and_challenge_bounds(surge: Surge) -> None:
    properties = (await _spec(surge))["components"]["schemas"]["DonationCreate"]["properties"]
    method = properties["payment_method"]
    assert method["pattern"] == "^pm_[A-Za-z0-9_]{1,200}$" and method["maxLength"] == 203
    refcode = properties["refcode"]["anyOf"][0]
    assert refcode["pattern"] == "^[A-Za-z0-9_.-]{1,64}$"
    challenge = properties["challenge"]["anyOf"][0]
    cases: list[tuple[str, Any, bool]] = [
        ("payment_method", "pm_" + "a" * (method["maxLength"] - 3), True),
        ("payment_method", "pm_" + "a" * (method["maxLength"] - 2), False),
        ("payment_method", "pm_", False),
        ("payment_method", "pm-card", False),
        ("refcode", "r" * refcode["maxLength"], True),
        ("refcode", "r" * (refcode["maxLength"] + 1), False),
        ("refcode", "spring.mail-1_a", True),
        ("refcode", "", False),
        ("refcode", "has space", False),
        ("challenge", "t" * challenge["maxLength"], True),
        ("challenge", "t" * (challenge["maxLength"] + 1), False),
        ("challenge", "t" * challenge["minLength"], True),
        ("challenge", "", False),
    ]
    for number, (name, value, ok) in enumerate(cases):
        body = donation(100, first_name=f"Bound{number}")
        body[name] = value
        status, answer = await surge.donate(body)
        assert _accepted(status, answer) if ok else _refused(status, answer, name), (name, value, answer)


async def test_every_query_limit_at_its_bounds(surge: Surge) -> None:
    spec = await _spec(surge)
    checked = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            limit = next((p for p in operation.get("parameters", []) if p["name"] == "limit"), None)
            if method != "get" or limit is None:
                continue
            schema = limit["schema"]
            url = path.replace("{code}", "contributions:demo")
            for value, ok in (
                (schema["maximum"], True),
                (schema["maximum"] + 1, False),
                (schema["minimum"] - 1, False),
            ):
                response = await surge.client.get(url, params={"limit": value}, headers=surge.auth(Role.FINANCE))
                answer = await response.json()
                if ok:
                    assert response.status == 200, (path, value, answer)
                else:
                    assert _refused(response.status, answer, "limit"), (path, value, answer)
            checked.append(path)
    assert len(checked) >= 7, checked
