"""Payment-method tokens the simulator understands, and the plan for one charge request.

The names are Stripe's test payment methods (https://docs.stripe.com/testing), so the same test data works against
Stripe's test mode; ``pm_sim_*`` tokens inject the faults only a simulator can: a timeout after the charge happened
and a timeout before it did. Random declines and timeouts from the configuration fall on otherwise-succeeding cards.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from adapters.simulated.config import SimulatedConfig
from adapters.simulated.record import ChargeRecordStatus


class CardBehaviour(StrEnum):
    SUCCEED = "succeed"
    DECLINE = "decline"
    REQUIRE_ACTION = "require_action"
    TIMEOUT_CHARGED = "timeout_charged"  # recorded as succeeded, then the caller hears nothing
    TIMEOUT_LOST = "timeout_lost"  # the request never arrived: nothing recorded, the caller hears nothing


@dataclass(frozen=True, slots=True)
class CardOutcome:
    behaviour: CardBehaviour
    decline_code: str | None = None


_SUCCEEDING_BRANDS = (
    "visa",
    "visa_debit",
    "mastercard",
    "mastercard_debit",
    "mastercard_prepaid",
    "amex",
    "discover",
    "diners",
    "jcb",
    "unionpay",
    "authenticationRequiredOnSetup",  # asks for authentication only when saved, not when charged
    "bypassPending",
)
_SUCCEEDING_COUNTRIES = (
    *("us", "ar", "br", "ca", "mx", "at", "be", "bg", "ch", "cy", "cz", "de", "dk", "ee", "es", "fi", "fr", "gb"),
    *("gr", "hr", "hu", "ie", "it", "li", "lt", "lu", "lv", "mt", "nl", "no", "pl", "pt", "ro", "se", "si", "sk"),
    *("ae", "au", "hk", "in", "jp", "my", "nz", "sg", "th"),
)
_DECLINES = {
    "chargeDeclined": "generic_decline",
    "chargeCustomerFail": "generic_decline",
    "chargeDeclinedInsufficientFunds": "insufficient_funds",
    "chargeDeclinedLostCard": "lost_card",
    "chargeDeclinedStolenCard": "stolen_card",
    "chargeDeclinedExpiredCard": "expired_card",
    "chargeDeclinedIncorrectCvc": "incorrect_cvc",
    "chargeDeclinedProcessingError": "processing_error",
    "chargeDeclinedFraudulent": "fraudulent",
    "chargeDeclinedVelocityLimitExceeded": "card_velocity_exceeded",
}
_REQUIRING_ACTION = ("authenticationRequired", "threeDSecureRequired", "threeDSecure2Required")

KNOWN_TOKENS: dict[str, CardOutcome] = {
    **{f"pm_card_{name}": CardOutcome(CardBehaviour.SUCCEED) for name in _SUCCEEDING_BRANDS + _SUCCEEDING_COUNTRIES},
    **{f"pm_card_{name}": CardOutcome(CardBehaviour.DECLINE, code) for name, code in _DECLINES.items()},
    # Stripe spells some declines with the brand in the name as well.
    **{f"pm_card_visa_{name}": CardOutcome(CardBehaviour.DECLINE, code) for name, code in _DECLINES.items()},
    **{f"pm_card_{name}": CardOutcome(CardBehaviour.REQUIRE_ACTION) for name in _REQUIRING_ACTION},
    "pm_sim_timeout_charged": CardOutcome(CardBehaviour.TIMEOUT_CHARGED),
    "pm_sim_timeout_lost": CardOutcome(CardBehaviour.TIMEOUT_LOST),
}

DECLINE_MESSAGES = {
    "insufficient_funds": "Your card has insufficient funds.",
    "expired_card": "Your card has expired.",
    "incorrect_cvc": "Your card's security code is incorrect.",
    "processing_error": "An error occurred while processing your card. Try again in a little bit.",
}
GENERIC_DECLINE_MESSAGE = "Your card was declined."
REQUIRES_ACTION_MESSAGE = (
    "requires_action: this payment needs the donor's authentication (3-D Secure); "
    "a webhook or a lookup will tell whether it succeeded"
)
# Random declines draw their reason from the commonest real ones.
RANDOM_DECLINE_CODES = ("generic_decline", "insufficient_funds", "do_not_honor")


# The card behind each succeeding test token, as Stripe's test cards (https://docs.stripe.com/testing): brand and the
# card number's last four digits, which the simulator reports with a charge as a processor does. Country tokens and
# the rest are Visa cards; Stripe's numbers for them mostly end in 0000 or 0002, so one plausible value stands in.
_CARDS = {
    "pm_card_visa": ("visa", "4242"),
    "pm_card_visa_debit": ("visa", "5556"),
    "pm_card_mastercard": ("mastercard", "4444"),
    "pm_card_mastercard_debit": ("mastercard", "8210"),
    "pm_card_mastercard_prepaid": ("mastercard", "5100"),
    "pm_card_amex": ("amex", "8431"),
    "pm_card_discover": ("discover", "1117"),
    "pm_card_diners": ("diners", "0004"),
    "pm_card_jcb": ("jcb", "0505"),
    "pm_card_unionpay": ("unionpay", "0005"),
    "pm_card_us": ("visa", "4242"),
    "pm_card_authenticationRequiredOnSetup": ("visa", "3155"),
    "pm_card_bypassPending": ("visa", "0077"),
    "pm_card_authenticationRequired": ("visa", "3184"),
    "pm_card_threeDSecureRequired": ("visa", "3063"),
    "pm_card_threeDSecure2Required": ("visa", "3220"),
    "pm_sim_timeout_charged": ("visa", "4242"),
}
_OTHER_CARD = ("visa", "0000")


def card_details(payment_method: str) -> tuple[str, str] | None:
    """(brand, last4) of the card behind a known token, None for a token the simulator does not know."""
    if payment_method not in KNOWN_TOKENS:
        return None
    return _CARDS.get(payment_method, _OTHER_CARD)


def card_outcome(payment_method: str) -> CardOutcome | None:
    """What the card behind ``payment_method`` does, or None for a token the processor does not know."""
    return KNOWN_TOKENS.get(payment_method)


def decline_message(decline_code: str) -> str:
    return DECLINE_MESSAGES.get(decline_code, GENERIC_DECLINE_MESSAGE)


class PlanKind(StrEnum):
    INVALID = "invalid"  # refused before anything happened: FAILED, nothing recorded
    RECORD = "record"  # record the charge with ``status``; then answer, or hang when ``hang`` is set
    LOSE = "lose"  # record nothing and hang: the request was lost on its way


@dataclass(frozen=True, slots=True)
class ChargePlan:
    kind: PlanKind
    status: ChargeRecordStatus | None = None
    decline_code: str | None = None  # for INVALID, the error code
    message: str | None = None
    hang: bool = False


def plan_charge(payment_method: str, amount_minor: int, config: SimulatedConfig, rng: random.Random) -> ChargePlan:
    if amount_minor < 1:
        return ChargePlan(PlanKind.INVALID, decline_code="amount_too_small", message="Amount must be at least 1.")
    outcome = card_outcome(payment_method)
    if outcome is None:
        message = f"No such PaymentMethod: '{payment_method}'"
        return ChargePlan(PlanKind.INVALID, decline_code="invalid_payment_method", message=message)
    behaviour = outcome.behaviour
    if behaviour is CardBehaviour.SUCCEED:
        return _succeeding_plan(config, rng)
    if behaviour is CardBehaviour.DECLINE:
        code = outcome.decline_code or "generic_decline"
        return ChargePlan(PlanKind.RECORD, ChargeRecordStatus.DECLINED, code, decline_message(code))
    if behaviour is CardBehaviour.REQUIRE_ACTION:
        return ChargePlan(PlanKind.RECORD, ChargeRecordStatus.REQUIRES_ACTION, message=REQUIRES_ACTION_MESSAGE)
    if behaviour is CardBehaviour.TIMEOUT_CHARGED:
        return ChargePlan(PlanKind.RECORD, ChargeRecordStatus.SUCCEEDED, hang=True)
    if behaviour is CardBehaviour.TIMEOUT_LOST:
        return ChargePlan(PlanKind.LOSE, hang=True)
    raise RuntimeError(f"card behaviour {behaviour} has no plan")


def _succeeding_plan(config: SimulatedConfig, rng: random.Random) -> ChargePlan:
    # Draw only for rates that are set, so that a quiet configuration consumes no randomness.
    if config.timeout_rate > 0 and rng.random() < config.timeout_rate:
        if rng.random() < config.timeout_charged_fraction:
            return ChargePlan(PlanKind.RECORD, ChargeRecordStatus.SUCCEEDED, hang=True)
        return ChargePlan(PlanKind.LOSE, hang=True)
    if config.decline_rate > 0 and rng.random() < config.decline_rate:
        code = rng.choice(RANDOM_DECLINE_CODES)
        return ChargePlan(PlanKind.RECORD, ChargeRecordStatus.DECLINED, code, decline_message(code))
    return ChargePlan(PlanKind.RECORD, ChargeRecordStatus.SUCCEEDED)
