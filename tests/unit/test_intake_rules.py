"""Pure intake rules: raw card-number detection and the donor key used to aggregate contributions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.api.validation import parse_json_object
from engine.pipeline.card_numbers import find_card_number, luhn_valid, may_hold_card_number
from engine.pipeline.donation_request import donor_key
from engine.validation import ValidationProblem


@pytest.mark.parametrize(
    ("digits", "valid"),
    [("4242424242424242", True), ("4000000000000002", True), ("378282246310005", True), ("4242424242424241", False)],
)
def test_luhn(digits: str, valid: bool) -> None:
    assert luhn_valid(digits) is valid


def test_card_numbers_are_found_wherever_they_hide() -> None:
    assert find_card_number({"payment_method": "4242 4242 4242 4242"}) == "payment_method"
    assert find_card_number({"donor": {"address_line1": "x 4000-0000-0000-0002 y"}}) == "donor.address_line1"
    assert find_card_number({"metadata": {"list": [1, 4242424242424242]}}) == "metadata.list[1]"
    assert find_card_number({"4242424242424242": "key"}) == "4242424242424242"
    assert find_card_number({"ref": "4242424242424241", "phone": "+1 217 555 0100", "zip": "62701"}) is None


def test_a_negative_integer_is_never_a_card_number() -> None:
    assert find_card_number({"metadata": {"offset": -4242424242424242428}}) is None
    assert find_card_number({"metadata": {"offset": -4242424242424242}}) is None
    assert find_card_number({"metadata": {"offset": 4242424242424242428}}) == "metadata.offset"


@given(st.lists(st.integers(0, 9), min_size=12, max_size=18))
def test_any_luhn_valid_number_of_13_to_19_digits_is_refused(prefix: list[int]) -> None:
    digits = "".join(map(str, prefix))
    check = next(d for d in "0123456789" if luhn_valid(digits + d))
    assert find_card_number({"note": f"my card {digits + check} thanks"}) == "note"


def test_donor_key_normalises_as_aggregation_requires() -> None:
    same = donor_key("Jane", "Doe", "62701")
    assert donor_key("JANE Q.", "  doe ", "62701-1234") == same
    assert donor_key("Jane", "Doe", "62701 1234") == same
    assert donor_key("Zoë", "Brontë", "10001") == donor_key("Zoe", "Bronte", "10001")
    assert donor_key("Mary-Ann", "O'Neil", "02139") == "oneil|maryann|02139"
    assert donor_key("John", "Doe", "62701") != same
    assert donor_key("Jane", "Doe", "62702") != same


@pytest.mark.parametrize(
    "body",
    [
        b'{"payment_method": "4242 4242 4242 4242"}',
        b'{"metadata": {"n": 4000056655665556}}',
        b'{"donor": {"address_line1": "x 4000-0000-0000-0002 y"}}',
        b'{"4242424242424242": "key"}',
        # Escaped digits are digits once parsed: the body's bytes cannot rule them out.
        b'{"note": "\\u0034\\u0032\\u0034\\u0032\\u0034\\u0032\\u0034\\u0032\\u0034\\u0032\\u0034\\u0032\\u0034\\u0032'
        b'\\u0034\\u0032"}',
    ],
)
def test_every_card_number_is_refused_past_the_body_precheck(body: bytes) -> None:
    with pytest.raises(ValidationProblem) as refused:
        parse_json_object(body)
    assert refused.value.code == "card_number_refused"


def test_a_body_without_long_digit_runs_is_not_walked() -> None:
    assert not may_hold_card_number(b'{"amount_minor": 2500, "donor": {"postal_code": "02139-1234"}}')
    assert may_hold_card_number(b'{"n": 1234567890123}')
