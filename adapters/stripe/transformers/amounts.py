"""Amounts between :class:`~ledger.money.Money` and Stripe's units.

Money counts ISO 4217 minor units; Stripe counts "the smallest currency unit" by its own table, which agrees for
almost every currency: cents for USD, yen for JPY (ISO exponent 0, Stripe zero-decimal), fils for BHD (exponent 3).
Where they differ the amount is scaled here and nowhere else:

- ISK: ISO exponent 0, but Stripe takes two decimals for backwards compatibility: 500 krónur is 50000 at Stripe.
- MGA: ISO exponent 2, Stripe zero-decimal: Money(12300, "MGA") (123.00 ariary) is 123 at Stripe.

An amount that cannot be expressed on the other side (1.50 ariary) raises :class:`UnrepresentableAmountError`.
"""

from __future__ import annotations

from ledger.currencies import minor_unit_exponent
from ledger.money import Money

# Stripe's zero-decimal currencies (docs.stripe.com/currencies#zero-decimal).
STRIPE_ZERO_DECIMAL_CURRENCIES = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"}
)


# Stripe's three-decimal currencies; Stripe requires the last digit to be 0, and says so in its own error.
STRIPE_THREE_DECIMAL_CURRENCIES = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})


class UnrepresentableAmountError(ValueError):
    """The amount has no exact equivalent in the other side's units."""


def stripe_exponent(currency: str) -> int:
    if currency in STRIPE_ZERO_DECIMAL_CURRENCIES:
        return 0
    if currency in STRIPE_THREE_DECIMAL_CURRENCIES:
        return 3
    return 2


def to_stripe_amount(money: Money) -> tuple[int, str]:
    """``(amount, currency)`` as Stripe's API takes them: its smallest unit and a lower-case code."""
    shift = stripe_exponent(money.currency) - minor_unit_exponent(money.currency)
    return _scale(money.amount_minor, shift, money.currency), money.currency.lower()


def from_stripe_amount(amount: int, currency: str) -> Money:
    code = currency.upper()
    if type(amount) is not int:
        raise UnrepresentableAmountError(f"Stripe amount must be an integer, got {amount!r} {code}")
    shift = minor_unit_exponent(code) - stripe_exponent(code)
    return Money(_scale(amount, shift, code), code)


def _scale(amount: int, shift: int, currency: str) -> int:
    if shift >= 0:
        return amount * 10**shift
    divisor = 10**-shift
    if amount % divisor:
        raise UnrepresentableAmountError(f"{amount} {currency} is not a whole multiple of {divisor} in the target unit")
    return amount // divisor
