"""The simulated processor's tokenization: a card number in, a payment-method token out, as Stripe's
``POST /v1/payment_methods`` (``type=card``, ``card[number]``, ``card[exp_month]``, ``card[exp_year]``,
``card[cvc]``) does for Stripe.js.

Stripe's test card numbers (https://docs.stripe.com/testing) map to the simulator's test tokens (``tokens.py``), so
the donation page, local runs and tests go through the same flow as with Stripe: the browser tokenizes, Surge's
donations API only ever sees ``pm_…``. Nothing here stores or logs a number. Any other number that passes the Luhn
check is refused like an unknown test card (Stripe's test mode refuses real numbers too).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

# Stripe's test card numbers → the simulator's test payment methods (tokens.KNOWN_TOKENS).
TEST_CARD_TOKENS: dict[str, str] = {
    "4242424242424242": "pm_card_visa",
    "4000056655665556": "pm_card_visa_debit",
    "5555555555554444": "pm_card_mastercard",
    "2223003122003222": "pm_card_mastercard",
    "5200828282828210": "pm_card_mastercard_debit",
    "378282246310005": "pm_card_amex",
    "371449635398431": "pm_card_amex",
    "6011111111111117": "pm_card_discover",
    "3056930009020004": "pm_card_diners",
    "3566002020360505": "pm_card_jcb",
    "6200000000000005": "pm_card_unionpay",
    "4000000000000002": "pm_card_chargeDeclined",
    "4000000000009995": "pm_card_chargeDeclinedInsufficientFunds",
    "4000000000009987": "pm_card_chargeDeclinedLostCard",
    "4000000000009979": "pm_card_chargeDeclinedStolenCard",
    "4000000000000069": "pm_card_chargeDeclinedExpiredCard",
    "4000000000000127": "pm_card_chargeDeclinedIncorrectCvc",
    "4000000000000119": "pm_card_chargeDeclinedProcessingError",
    "4100000000000019": "pm_card_chargeDeclinedFraudulent",
    "4000000000006975": "pm_card_chargeDeclinedVelocityLimitExceeded",
    "4000000000000341": "pm_card_chargeCustomerFail",
    "4000002500003155": "pm_card_authenticationRequired",
    "4000002760003184": "pm_card_authenticationRequired",
    "4000000000003220": "pm_card_threeDSecure2Required",
}
NUMBER_DIGITS_MIN = 12
NUMBER_DIGITS_MAX = 19


@dataclass(frozen=True, slots=True)
class CardError:
    """Stripe's shape for a card that cannot be tokenized: ``code`` and ``param`` as Stripe names them."""

    code: str
    param: str
    message: str


def _luhn_valid(digits: str) -> bool:
    total = 0
    for position, character in enumerate(reversed(digits)):
        value = int(character)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _digits(text: str) -> bool:
    return text.isascii() and text.isdecimal()  # str.isdecimal alone admits other scripts' digits (fullwidth, …)


def tokenize_card(number: str, exp_month: str, exp_year: str, cvc: str, today: date) -> str | CardError:
    """The test payment method for a test card, or why the card is refused (Stripe's codes and messages)."""
    digits = number.replace(" ", "").replace("-", "")
    if not _digits(digits) or not NUMBER_DIGITS_MIN <= len(digits) <= NUMBER_DIGITS_MAX or not _luhn_valid(digits):
        return CardError("incorrect_number", "card[number]", "Your card number is incorrect.")
    if not (_digits(exp_month) and 1 <= int(exp_month) <= 12):
        return CardError("invalid_expiry_month", "card[exp_month]", "Your card's expiration month is invalid.")
    if not (_digits(exp_year) and len(exp_year) in (2, 4)):
        return CardError("invalid_expiry_year", "card[exp_year]", "Your card's expiration year is invalid.")
    year = int(exp_year) + (2000 if len(exp_year) == 2 else 0)
    if (year, int(exp_month)) < (today.year, today.month):
        return CardError("invalid_expiry_year", "card[exp_year]", "Your card's expiration year is in the past.")
    if not (_digits(cvc) and len(cvc) in (3, 4)):
        return CardError("invalid_cvc", "card[cvc]", "Your card's security code is invalid.")
    token = TEST_CARD_TOKENS.get(digits)
    if token is None:
        return CardError(
            "card_declined",
            "card[number]",
            "Your card was declined. The simulated processor accepts only Stripe's test card numbers.",
        )
    return token
