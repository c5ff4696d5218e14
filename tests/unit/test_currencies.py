"""The one ISO 4217 table: exponents, formatting by integer arithmetic, unknown codes refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.currencies import MINOR_UNIT_EXPONENTS, UnknownCurrencyError, format_minor, minor_unit_exponent


@pytest.mark.parametrize(
    ("currency", "exponent"), [("USD", 2), ("JPY", 0), ("ISK", 0), ("MGA", 2), ("BHD", 3), ("CLF", 4)]
)
def test_exponents_follow_iso_4217(currency: str, exponent: int) -> None:
    assert minor_unit_exponent(currency) == exponent


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [(1205, "USD", "12.05"), (-1205, "USD", "-12.05"), (5, "USD", "0.05"), (500, "JPY", "500"), (1500, "KWD", "1.500")],
)
def test_format_minor(amount: int, currency: str, text: str) -> None:
    assert format_minor(amount, currency) == text


def test_unknown_currency_is_refused() -> None:
    with pytest.raises(UnknownCurrencyError):
        minor_unit_exponent("XYZ")


def test_format_refuses_floats() -> None:
    with pytest.raises(TypeError):
        format_minor(12.5, "USD")  # type: ignore[arg-type]


@given(st.integers(min_value=-(10**15), max_value=10**15), st.sampled_from(sorted(MINOR_UNIT_EXPONENTS)))
def test_formatted_amount_reads_back_exactly(amount: int, currency: str) -> None:
    text = format_minor(amount, currency)
    negative = text.startswith("-")
    digits = text.lstrip("-").replace(".", "")
    assert int(digits) * (-1 if negative else 1) == amount
    exponent = minor_unit_exponent(currency)
    assert (len(text.split(".")[1]) if "." in text else 0) == exponent


def test_money_and_the_currency_check_use_the_same_table() -> None:
    from ledger.money import Money, is_currency_code

    assert all(is_currency_code(code) for code in MINOR_UNIT_EXPONENTS)
    assert not any(is_currency_code(code) for code in ("XYZ", "usd", "US", "USDD", None, 840))
    assert Money(1, "JPY").currency == "JPY"
    with pytest.raises(ValueError, match="ISO 4217"):
        Money(1, "XYZ")  # three upper-case letters, but no currency
