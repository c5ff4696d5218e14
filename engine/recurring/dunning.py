"""Dunning: what a failed installment attempt leads to — a retry later, or the end of the period (and the plan).

Processors' own dunning retries a failed renewal a few times over a few weeks (Stripe's Smart Retries default: up to
4 retries within about 3 weeks); Surge's default is the same, as delays in days after each failure:
``DEFAULT_RETRY_DELAYS_DAYS`` (3 + 5 + 7 + 7 = 22 days). A hard decline — the card reported stolen or lost, fraud,
a closed account, a revoked authorisation — is never retried: retrying those is how a merchant gets flagged.
Authentication required (no donor present for 3-D Secure) is soft: the donor is told to confirm on the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

DEFAULT_RETRY_DELAYS_DAYS: tuple[float, ...] = (3.0, 5.0, 7.0, 7.0)
RETRIES_MAX = 10

# Decline codes after which the card must not be charged again (Stripe's decline-code list marks these "do not try
# again" or as fraud, loss or theft).
HARD_DECLINE_CODES = frozenset(
    {
        "stolen_card",
        "lost_card",
        "pickup_card",
        "fraudulent",
        "merchant_blacklist",
        "restricted_card",
        "security_violation",
        "do_not_try_again",
        "revocation_of_authorization",
        "revocation_of_all_authorizations",
        "account_closed",
        "invalid_account",
        "card_not_supported",
    }
)

# Declines a card updater can cure (a renewed card: new expiry or number): the saved method is read again from the
# processor, and when it changed the retry is made at once with the new card.
CARD_UPDATE_CODES = frozenset({"expired_card", "incorrect_number", "invalid_expiry_month", "invalid_expiry_year"})


class Next(StrEnum):
    RETRY = "retry"  # try the period again after ``delay``
    GIVE_UP = "give_up"  # the period failed; the plan is cancelled


@dataclass(frozen=True, slots=True)
class Decision:
    next: Next
    reason: str
    delay: timedelta | None = None


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    delays_days: tuple[float, ...] = DEFAULT_RETRY_DELAYS_DAYS

    def __post_init__(self) -> None:
        if len(self.delays_days) > RETRIES_MAX or any(d <= 0 for d in self.delays_days):
            raise ValueError(f"retry delays must be 0 to {RETRIES_MAX} positive numbers of days")

    @classmethod
    def parse(cls, text: str) -> RetrySchedule:
        """``"3,5,7,7"`` (days; fractions allowed, e.g. ``0.0001`` in tests); an empty text: no retries."""
        parts: Sequence[str] = [p for p in (s.strip() for s in text.split(",")) if p]
        try:
            return cls(tuple(float(p) for p in parts))
        except ValueError as error:
            raise ValueError(f"retry schedule {text!r}: {error}") from None

    def decide(self, attempts_made: int, decline_code: str | None) -> Decision:
        """After attempt number ``attempts_made`` (1 for the first) failed with ``decline_code``."""
        code = decline_code or "failed"
        if code in HARD_DECLINE_CODES:
            return Decision(Next.GIVE_UP, f"hard_decline:{code}")
        retries_made = attempts_made - 1
        if retries_made >= len(self.delays_days):
            return Decision(Next.GIVE_UP, f"retries_exhausted:{code}")
        return Decision(Next.RETRY, code, timedelta(days=self.delays_days[retries_made]))
