"""The request models validate exactly as the hand-written validator they replaced (kept in the benchmark).

Every single-field mutation of a valid donation body — each field missing, null, blank, of each wrong JSON type,
at and past each length and bound, unknown fields at both levels — gets the same answer from both: the same
``DonationRequest``, or the same ``param``, ``code`` and ``message``.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest

from benchmarks.request_models import VALID_BODY, hand_written, msgspec_models
from engine.api.models import CampaignCreate, KeyCreate, RefundCreate
from engine.pipeline.donation_request import AMOUNT_MINOR_MAX
from engine.validation import ValidationProblem, decode, first_problem

MISSING = object()
WRONG_TYPES: list[Any] = [None, "", "   ", "x", 0, 7, -1, 2.5, True, False, [], ["a"], {}, {"a": 1}]


def _mutations() -> list[tuple[str, Any]]:
    base = orjson.loads(VALID_BODY)
    paths = [f"donor.{name}" for name in base["donor"]] + [n for n in base if n != "donor"] + ["donor"]
    paths += [f"donor.{name}" for name in ("address_line2", "phone")]
    values: dict[str, list[Any]] = {
        "amount": [1, AMOUNT_MINOR_MAX, AMOUNT_MINOR_MAX + 1, 10**30, -(10**30), "25.00", 25.0],
        "currency": ["usd", "USD", "eur", "us", "usdd", "u$d", "123"],
        "payment_method": ["pm_cash_1", "pm_giftcard", "pm_" + "a" * 200, "pm_" + "a" * 201, "pm_", "pm-card", "tok"],
        "donor.email": ["a@b", "a@b.c", " jane@example.org ", "jane@@example.org", "jane example@x.org"],
        "metadata": [
            {str(n): n for n in range(20)},
            {str(n): n for n in range(21)},
            {"k" * 40: "v"},
            {"k" * 41: "v"},
            {"k": "v" * 500},
            {"k": "v" * 501},
            {"k": 10**499},
            {"k": 10**500},
            {"k": True},
            {"k": 1.5},
            {"k": None},
            {"k": {"nested": 1}},
        ],
    }
    text = ["a" * 200, "a" * 201, " a ", "\t"]
    mutations = []
    for path in paths:
        for value in [MISSING, *WRONG_TYPES, *values.get(path, text)]:
            mutations.append((path, value))
    return mutations


def _mutated(path: str, value: Any) -> bytes:
    body = copy.deepcopy(orjson.loads(VALID_BODY))
    target, _, name = path.rpartition(".")
    holder = body["donor"] if target == "donor" else body
    if value is MISSING:
        holder.pop(name, None)
    else:
        holder[name] = value
    return json.dumps(body).encode()  # stdlib: orjson cannot write integers past 64 bits


def _answer(validate: Any, raw: bytes) -> Any:
    try:
        return validate(raw)
    except ValidationProblem as problem:
        return (problem.param, problem.code, problem.message)


@pytest.mark.parametrize(("path", "value"), _mutations())
def test_the_models_answer_as_the_hand_written_validator(path: str, value: Any) -> None:
    raw = _mutated(path, value)
    assert _answer(msgspec_models, raw) == _answer(hand_written, raw)


@pytest.mark.parametrize(
    "extra",
    [{"zeta": 1, "alpha": 2}, {"amount": 1, "campaign": 5, "x": 1}],
)
def test_unknown_fields_are_named_in_sorted_order_after_the_known_ones(extra: dict[str, Any]) -> None:
    body = {**orjson.loads(VALID_BODY), **extra}
    raw = orjson.dumps(body)
    assert _answer(msgspec_models, raw) == _answer(hand_written, raw)


def test_the_first_problem_in_declared_order_is_reported_whatever_the_key_order() -> None:
    body = orjson.loads(VALID_BODY)
    body["metadata"] = {"k": True}
    body["amount"] = "25"
    reordered = {"metadata": body.pop("metadata"), **body}
    assert _answer(msgspec_models, orjson.dumps(reordered))[0] == "amount"


def test_other_bodies() -> None:
    assert decode({}, RefundCreate).amount is None
    with pytest.raises(ValidationProblem) as refused:
        decode({"amount": "5"}, RefundCreate)
    assert (refused.value.param, refused.value.code) == ("amount", "parameter_invalid")
    with pytest.raises(ValidationProblem) as unknown:
        decode({"b": 1, "a": 1}, RefundCreate)
    assert (unknown.value.param, unknown.value.code, unknown.value.message) == (
        "a",
        "parameter_unknown",
        "Unknown parameter: a.",
    )
    assert decode({"role": "finance", "ignored": 1}, KeyCreate).role == "finance"
    problem = first_problem({"role": "boss"}, KeyCreate)
    assert problem is not None and problem.message == "role must be form, finance or admin."
    problem = first_problem({"slug": "Bad Slug", "name": "n", "election": "e"}, CampaignCreate)
    assert problem is not None and problem.message == "slug must be lower-case letters, digits and dashes."
    problem = first_problem({"slug": "ok", "name": "n"}, CampaignCreate)
    assert problem is not None and (problem.param, problem.message) == ("election", "election must be a str.")
