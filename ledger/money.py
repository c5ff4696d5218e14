"""Money as integer minor units plus an ISO 4217 currency code. Never floats.

A currency code is one of ledger.currencies' table (upper case): the same table the reports format with and the
adapters convert with, so a made-up code is refused where money is made, not when it is first formatted."""

from __future__ import annotations

from dataclasses import dataclass

from ledger.currencies import MINOR_UNIT_EXPONENTS


@dataclass(frozen=True, slots=True)
class Money:
    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        if type(self.amount_minor) is not int:
            raise TypeError(f"amount_minor must be an int, got {type(self.amount_minor).__name__}")
        if not is_currency_code(self.currency):
            raise ValueError(f"currency must be an upper-case ISO 4217 code, got {self.currency!r}")

    def __neg__(self) -> Money:
        return Money(-self.amount_minor, self.currency)

    def __add__(self, other: Money) -> Money:
        self._require_same_currency(other)
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._require_same_currency(other)
        return Money(self.amount_minor - other.amount_minor, self.currency)

    def _require_same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"cannot combine {self.currency} and {other.currency}")


def is_currency_code(value: object) -> bool:
    """An active ISO 4217 code in upper case (``USD``, not ``usd`` or ``XQZ``)."""
    return isinstance(value, str) and value in MINOR_UNIT_EXPONENTS
