"""Requests the fuzzer found answered 500, kept as regressions: each must be a 4xx (a Stripe-shaped error for the API,
the sign-in page for the dashboard's form) and must write nothing."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from engine.keys import Role
from tests.e2e.conftest import Surge, donation

CAMPAIGN = {"slug": "fuzz", "name": "Fuzz", "election": "2026-general", "currency": "USD"}


def _with_raw(body: dict[str, Any], path: tuple[str, ...], value: bytes) -> bytes:
    """``body`` as JSON with the value at ``path`` replaced by the raw JSON text ``value`` (escapes kept as written)."""
    marker = "__unusual__"
    holder = body
    for name in path[:-1]:
        holder = holder[name]
    holder[path[-1]] = marker
    return orjson.dumps(body).replace(f'"{marker}"'.encode(), value)


def _stripe_error(status: int, body: dict[str, Any]) -> dict[str, Any]:
    assert 400 <= status < 500, (status, body)
    error = body["error"]
    assert set(error) >= {"type", "code", "message", "param"}, error
    assert error["type"] == "invalid_request_error", error
    return dict(error)


async def _post(surge: Surge, path: str, body: bytes, role: Role, **headers: str) -> tuple[int, dict[str, Any]]:
    response = await surge.client.post(
        path, data=body, headers={**surge.auth(role), "Content-Type": "application/json", **headers}
    )
    return response.status, await response.json()


async def _counts(surge: Surge) -> tuple[int, int, int]:
    async with surge.pool.acquire() as connection:
        return (
            await connection.fetchval("SELECT count(*) FROM surge.campaigns"),
            await connection.fetchval("SELECT count(*) FROM surge.donations"),
            await connection.fetchval("SELECT count(*) FROM ledger.entries"),
        )


UNUSUAL_JSON = {
    "lone high surrogate": b'"\\ud800"',
    "lone low surrogate": b'"\\udfff"',
    "surrogate as raw bytes": b'"\xed\xa0\x80"',
    "NUL": b'"a\\u0000b"',
    "huge float": b"1e400",
    "negative huge float": b"-1e400",
    "float": b"1e308",
    "integer past bigint": b"18446744073709551615",
    "integer past 64 bits": b"123456789012345678901234567890",
}


@pytest.mark.parametrize("value", UNUSUAL_JSON.values(), ids=UNUSUAL_JSON.keys())
async def test_unusual_json_in_a_campaign_is_a_400(surge: Surge, value: bytes) -> None:
    before = await _counts(surge)
    for field in ("name", "election", "slug", "currency", "contribution_limit", "itemization_threshold"):
        status, answer = await _post(surge, "/v1/campaigns", _with_raw(dict(CAMPAIGN), (field,), value), Role.ADMIN)
        _stripe_error(status, answer)
    assert await _counts(surge) == before


DONATION_FIELDS = [("amount",), ("campaign",), ("donor", "first_name"), ("donor", "email"), ("payment_method",)]


@pytest.mark.parametrize("value", UNUSUAL_JSON.values(), ids=UNUSUAL_JSON.keys())
async def test_unusual_json_in_a_donation_is_a_400(surge: Surge, value: bytes) -> None:
    before = await _counts(surge)
    bodies = [_with_raw(donation(100), path, value) for path in DONATION_FIELDS]
    if not value.isdigit():  # a metadata value may be an integer of up to 500 digits
        bodies.append(_with_raw(donation(100), ("metadata",), b'{"note": ' + value + b"}"))
    for body in bodies:
        status, answer = await _post(surge, "/v1/donations", body, Role.FORM, **{"Idempotency-Key": surge.next_key()})
        _stripe_error(status, answer)
    assert await _counts(surge) == before


async def test_integers_are_kept_exactly_up_to_64_bits_and_refused_past_them(surge: Surge) -> None:
    """Not turned into floats that lost their digits (orjson's reading), nor a 500 in the request's fingerprint."""
    body = donation(100)
    body["metadata"] = {"reference": 2**63 - 1}
    status, answer = await surge.donate(body)
    assert status == 201, answer
    assert answer["metadata"] == {"reference": str(2**63 - 1)}
    for value in (2**63, 10**29, -(2**63) - 1):
        body["metadata"] = {"reference": value}
        status, answer = await surge.donate(body)
        assert _stripe_error(status, answer)["param"] == "metadata.reference"
    body["metadata"] = None
    body["amount"] = 10**29
    status, answer = await surge.donate(body)
    assert _stripe_error(status, answer)["param"] == "amount"


async def test_a_nul_in_a_metadata_key_is_a_400(surge: Surge) -> None:
    body = donation(100)
    body["metadata"] = {"a\x00b": "v"}
    status, answer = await _post(
        surge, "/v1/donations", orjson.dumps(body), Role.FORM, **{"Idempotency-Key": surge.next_key()}
    )
    assert _stripe_error(status, answer)["param"] == "metadata"


async def test_a_nul_in_a_query_or_path_parameter_is_a_400(surge: Surge) -> None:
    paths = ("/v1/donations?campaign=a%00b", "/v1/reports/campaign-days?campaign=a%00b", "/v1/donations/a%00b")
    for path in paths:
        response = await surge.client.get(path, headers=surge.auth(Role.FINANCE))
        _stripe_error(response.status, await response.json())


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",
        "multipart/form-data; boundary=",
        'multipart/form-data; boundary="unterminated',
        "application/x-www-form-urlencoded; charset=no-such-charset",
    ],
)
async def test_a_sign_in_form_that_cannot_be_read_is_a_400(surge: Surge, content_type: str) -> None:
    response = await surge.client.post(
        "/dashboard/login", data=b"--x\r\n\r\nkey=1\r\n", headers={"Content-Type": content_type}
    )
    assert response.status == 400, await response.text()
    assert response.content_type == "text/html"
    assert "could not be read" in await response.text()
    async with surge.pool.acquire() as connection:
        assert await connection.fetchval("SELECT count(*) FROM surge.dashboard_sessions") == 0


async def test_the_sign_in_form_still_signs_in(surge: Surge) -> None:
    response = await surge.client.post(
        "/dashboard/login", data={"key": surge.keys[Role.FINANCE]}, allow_redirects=False
    )
    assert response.status == 303
    assert "surge_dashboard" in response.cookies


async def test_a_campaign_name_and_election_have_the_table_s_bounds(surge: Surge) -> None:
    """The schema said any string; surge.campaigns' CHECK constraints turned an empty or long one into a 500."""
    before = await _counts(surge)
    for field, value in (("name", ""), ("name", "n" * 201), ("election", ""), ("election", "e" * 101)):
        body = orjson.dumps({**CAMPAIGN, field: value})
        status, answer = await _post(surge, "/v1/campaigns", body, Role.ADMIN)
        assert _stripe_error(status, answer)["param"] == field, (field, len(value), answer)
    assert await _counts(surge) == before
    body = orjson.dumps({**CAMPAIGN, "name": "n" * 200, "election": "e" * 100})
    status, answer = await _post(surge, "/v1/campaigns", body, Role.ADMIN)
    assert status == 201, answer


async def test_a_campaign_currency_must_be_one_the_ledger_knows(surge: Surge) -> None:
    """Three letters are not enough: a campaign in AAA made every report that formats money answer 500."""
    before = await _counts(surge)
    status, answer = await _post(surge, "/v1/campaigns", orjson.dumps({**CAMPAIGN, "currency": "AAA"}), Role.ADMIN)
    assert _stripe_error(status, answer)["param"] == "currency"
    assert await _counts(surge) == before
    status, answer = await _post(surge, "/v1/campaigns", orjson.dumps({**CAMPAIGN, "currency": "eur"}), Role.ADMIN)
    assert status == 201 and answer["currency"] == "EUR", answer


async def test_ids_and_numbers_past_64_bits_or_not_ascii_are_no_500(surge: Surge) -> None:
    finance = surge.auth(Role.FINANCE)
    response = await surge.client.get("/v1/reconciliations/99999999999999999999", headers=finance)
    assert _stripe_error(response.status, await response.json())["code"] == "resource_missing"
    entries = "/v1/ledger/accounts/clearing:simulated:USD/entries"
    for cursor in ("99999999999999999999", "\u00b2"):  # every entry is before a cursor past bigint; "²" is no number
        response = await surge.client.get(entries, params={"starting_after": cursor}, headers=finance)
        assert response.status == 200, await response.text()
    response = await surge.client.get("/v1/donations", params={"limit": "\u00b2"}, headers=finance)
    assert _stripe_error(response.status, await response.json())["param"] == "limit"


async def test_resolving_an_exception_past_64_bits_is_not_found(surge: Surge) -> None:
    response = await surge.client.post(
        "/v1/reconciliations/exceptions/99999999999999999999/resolve",
        json={"memo": "why"},
        headers=surge.auth(Role.FINANCE),
    )
    assert response.status == 404, await response.text()
