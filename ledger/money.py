"""Money as integer minor units plus an ISO 4217 currency code. Never floats."""

from __future__ import annotations

import re
from dataclasses import dataclass

_CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True, slots=True)
class Money:
    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        if type(self.amount_minor) is not int:
            raise TypeError(f"amount_minor must be an int, got {type(self.amount_minor).__name__}")
        if not _CURRENCY.match(self.currency):
            raise ValueError(f"currency must be three upper-case letters, got {self.currency!r}")

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
    return isinstance(value, str) and bool(_CURRENCY.match(value))
