"""The traffic mix: who gives how much with which card, drawn from a seed, and each request's bytes built up front.

What it models, and why:
- amounts are skewed as small-dollar fundraising is: mostly the form's buttons ($5-$250), a log-normal tail of
  custom amounts, and a few large gifts near the $3,500 per-election limit;
- repeat donors: half the requests come from a small pool of loyal donors drawn with a Zipf law, so that some give
  again and again and their contribution limit binds (422); the rest are first-time donors;
- a share of declines (Stripe's test tokens such as ``pm_card_chargeDeclined``), each from a donor of its own;
- a share of invalid requests (missing fields, float amounts, raw card numbers, no idempotency key …): 400;
- impatient clients that give up after a fraction of a second and retry with the same idempotency key, and charges
  the simulator records and then never answers (``pm_sim_timeout_charged``): the engine must charge once;
- a card-testing burst: one source address sending many small declined charges quickly; the engine should block it
  (429) after a few declines while donors with their own addresses go on.

Every donor has a stable address (``X-Forwarded-For``, from the 198.18.0.0/15 benchmarking range); the engine must
trust that header (``SURGE_TRUST_FORWARDED_FOR=true``) for per-address velocity limits to see distinct donors.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

CARD_TESTING_ADDRESS = "203.0.113.66"  # TEST-NET-3: one bot behind one address
BUTTON_AMOUNTS_MINOR = (500, 1000, 2500, 5000, 10_000, 25_000)
BUTTON_WEIGHTS = (15, 20, 30, 20, 10, 5)
LARGE_AMOUNTS_MINOR = (100_000, 200_000, 290_000, 330_000)
AMOUNT_MINOR_MAX = 350_000
SUCCEEDING_CARDS = ("pm_card_visa", "pm_card_mastercard", "pm_card_amex", "pm_card_visa_debit", "pm_card_discover")
DECLINING_CARDS = (
    "pm_card_chargeDeclined",
    "pm_card_chargeDeclinedInsufficientFunds",
    "pm_card_chargeDeclinedExpiredCard",
    "pm_card_chargeDeclinedIncorrectCvc",
)
TIMEOUT_CARD = "pm_sim_timeout_charged"  # the simulator records the charge, then does not answer
FIRST_NAMES = ("Maria", "James", "Aisha", "Wei", "Sofia", "Daniel", "Priya", "Liam", "Fatima", "Noah", "Elena", "Omar")
LAST_NAMES = ("Garcia", "Smith", "Nguyen", "Johnson", "Patel", "Brown", "Kim", "Lopez", "Okafor", "Miller", "Cohen")
STATES = ("CA", "TX", "NY", "PA", "GA", "AZ", "MI", "WI", "NV", "NC", "OH", "FL")


class Kind(StrEnum):
    DONATION = "donation"  # a card that succeeds
    DECLINE = "decline"  # a card that is declined
    INVALID = "invalid"  # a request the engine must refuse with 400
    TIMEOUT = "timeout"  # a card the simulated processor charges and then leaves unanswered
    CARD_TESTING = "card_testing"  # the bot


@dataclass(frozen=True)
class TrafficMix:
    decline_share: float = 0.04
    invalid_share: float = 0.02
    timeout_share: float = 0.002
    impatient_share: float = 0.02  # requests whose client gives up after ``impatient_timeout_s`` and retries
    repeat_share: float = 0.5  # requests from the pool of loyal donors
    loyal_donor_count: int = 2_000
    zipf_exponent: float = 1.0
    employer_missing_share: float = 0.03  # donors who leave employer/occupation blank (400 once past $200)
    card_testing_requests: int = 60
    card_testing_at: float = 0.3  # fraction of the run when the bot starts
    card_testing_rate_per_s: float = 20.0

    def __post_init__(self) -> None:
        shares = (self.decline_share, self.invalid_share, self.timeout_share, self.impatient_share)
        if not all(0 <= share <= 1 for share in (*shares, self.repeat_share, self.employer_missing_share)):
            raise ValueError("traffic shares must be fractions between 0 and 1")
        if self.decline_share + self.invalid_share + self.timeout_share > 1:
            raise ValueError("decline, invalid and timeout shares add up to more than 1")
        if self.loyal_donor_count < 1 or self.card_testing_requests < 0 or self.card_testing_rate_per_s <= 0:
            raise ValueError("need at least one loyal donor, no negative bot requests and a positive bot rate")

    @classmethod
    def clean(cls) -> TrafficMix:
        """Valid donations only, every one from a donor giving once: the benchmark's workload."""
        return cls(0, 0, 0, 0, repeat_share=0, employer_missing_share=0, card_testing_requests=0)


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    form_key: str
    campaign: str = "demo"
    currency: str = "usd"


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    """One logical request: sent at ``due_s``, retried with the same bytes (and idempotency key) when needed."""

    number: int
    due_s: float
    kind: Kind
    amount_minor: int
    data: bytes  # the whole HTTP request
    impatient: bool


class TrafficPlan:
    """Draws requests for a schedule of arrival times; each request's content depends only on the seed and index."""

    def __init__(self, mix: TrafficMix, target: Target, seed: int, run_id: str, first_donor: int = 0) -> None:
        self.mix = mix
        self.target = target
        self.seed = seed
        self.run_id = run_id
        self._rng = random.Random(seed)
        self._loyal_weights = list(
            itertools.accumulate(1 / rank**mix.zipf_exponent for rank in range(1, mix.loyal_donor_count + 1))
        )
        # One-off donors are numbered after the loyal ones; ``first_donor`` keeps several plans' donors apart.
        self._one_off_donors = itertools.count(mix.loyal_donor_count + first_donor)
        self._header_prefix = (
            f"POST /v1/donations HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
            f"Authorization: Bearer {target.form_key}\r\nContent-Type: application/json\r\n"
        ).encode()

    def requests(self, due_times: Sequence[float], duration_s: float) -> list[PlannedRequest]:
        """The planned requests for ``due_times``, with the card-testing burst merged in, ordered by due time."""
        planned = [self._draw(number, due) for number, due in enumerate(due_times)]
        bot_start = self.mix.card_testing_at * duration_s
        for index in range(self.mix.card_testing_requests):
            due = bot_start + index / self.mix.card_testing_rate_per_s
            if due < duration_s:
                planned.append(self._card_test(len(planned), due, index))
        planned.sort(key=lambda request: request.due_s)
        return planned

    # -- drawing one request ----------------------------------------------------------------------------------------

    def _draw(self, number: int, due_s: float) -> PlannedRequest:
        rng, mix = self._rng, self.mix
        roll = rng.random()
        impatient = rng.random() < mix.impatient_share
        if roll < mix.invalid_share:
            return self._invalid(number, due_s, self._donor(rng.random() < mix.repeat_share), impatient)
        roll -= mix.invalid_share
        if roll < mix.decline_share:
            # A bad card belongs to a donor of its own: repeat donors do not pile up declines against themselves.
            card = rng.choice(DECLINING_CARDS)
            return self._donation(number, due_s, Kind.DECLINE, self._donor(False), card, impatient)
        roll -= mix.decline_share
        if roll < mix.timeout_share:
            return self._donation(number, due_s, Kind.TIMEOUT, self._donor(False), TIMEOUT_CARD, impatient)
        card = SUCCEEDING_CARDS[int(rng.random() * len(SUCCEEDING_CARDS))]
        donor = self._donor(rng.random() < mix.repeat_share)
        return self._donation(number, due_s, Kind.DONATION, donor, card, impatient)

    def _donor(self, loyal: bool) -> int:
        if loyal:
            total = self._loyal_weights[-1]
            return bisect.bisect(self._loyal_weights, self._rng.random() * total)
        return next(self._one_off_donors)

    def _amount_minor(self) -> int:
        rng = self._rng
        roll = rng.random()
        if roll < 0.70:
            return rng.choices(BUTTON_AMOUNTS_MINOR, BUTTON_WEIGHTS)[0]
        if roll < 0.97:  # a custom amount: log-normal around $30
            return max(100, min(AMOUNT_MINOR_MAX, round(rng.lognormvariate(math.log(3000), 1.0))))
        return rng.choice(LARGE_AMOUNTS_MINOR)

    def _donation(
        self, number: int, due_s: float, kind: Kind, donor: int, card: str, impatient: bool
    ) -> PlannedRequest:
        amount = self._amount_minor()
        body = self._body(donor, amount, card)
        return PlannedRequest(number, due_s, kind, amount, self._request(number, donor, body), impatient)

    def _card_test(self, number: int, due_s: float, index: int) -> PlannedRequest:
        # Different names and cards each time, as bots do: only the source address ties the attempts together.
        donor, amount = 10_000_000 + index, 100 + index % 7
        body = self._body(donor, amount, DECLINING_CARDS[index % len(DECLINING_CARDS)])
        data = self._request(number, donor, body, address=CARD_TESTING_ADDRESS)
        return PlannedRequest(number, due_s, Kind.CARD_TESTING, amount, data, impatient=False)

    def _invalid(self, number: int, due_s: float, donor: int, impatient: bool) -> PlannedRequest:
        body = self._body(donor, self._amount_minor(), "pm_card_visa")
        variant = number % 8
        with_key = True
        if variant == 0:
            del body["amount"]
        elif variant == 1:
            body["amount"] = body["amount"] / 100  # dollars as a float, a common integration mistake
        elif variant == 2:
            body["donor"]["email"] = "not-an-email"
        elif variant == 3:
            body["payment_method"] = "4242 4242 4242 4242"  # a raw card number: must be refused, never stored
        elif variant == 4:
            body["campaign"] = "no-such-campaign"
        elif variant == 5:
            body["currency"] = "usdollars"
        elif variant == 6:
            body["donor"]["citizenship_attested"] = False
        else:
            with_key = False
        data = self._request(number, donor, body, with_key=with_key)
        return PlannedRequest(number, due_s, Kind.INVALID, 0, data, impatient)

    def _body(self, donor: int, amount_minor: int, card: str) -> dict[str, Any]:
        person: dict[str, Any] = {
            "first_name": FIRST_NAMES[donor % len(FIRST_NAMES)],
            "last_name": f"{LAST_NAMES[donor % len(LAST_NAMES)]} {_letters(donor)}",
            "email": f"donor{donor}@example.org",
            "address_line1": f"{donor % 9000 + 1} Main St",
            "city": "Springfield",
            "state": STATES[donor % len(STATES)],
            "postal_code": f"{10000 + donor % 89_999:05d}",
            "country": "US",
            "citizenship_attested": True,
        }
        if (donor * 2_654_435_761) % 1000 >= self.mix.employer_missing_share * 1000:
            person["employer"] = "Self-employed" if donor % 3 else "Acme Corp"
            person["occupation"] = ("Teacher", "Nurse", "Engineer", "Retired")[donor % 4]
        return {
            "amount": amount_minor,
            "currency": self.target.currency,
            "campaign": self.target.campaign,
            "donor": person,
            "payment_method": card,
            "metadata": {"source": "loadtest", "run": self.run_id},
        }

    def _request(
        self, number: int, donor: int, body: dict[str, Any], *, address: str | None = None, with_key: bool = True
    ) -> bytes:
        payload = orjson.dumps(body)
        headers = [
            f"X-Forwarded-For: {address or donor_address(donor)}\r\n",
            f"Idempotency-Key: lt-{self.run_id}-{number}\r\n" if with_key else "",
            f"Content-Length: {len(payload)}\r\n\r\n",
        ]
        return self._header_prefix + "".join(headers).encode() + payload


def donor_address(donor: int) -> str:
    """A stable address per donor in 198.18.0.0/15 (the range set aside for benchmarks)."""
    number = donor % (1 << 17)
    return f"198.{18 + (number >> 16)}.{(number >> 8) & 0xFF}.{number & 0xFF}"


def _letters(number: int) -> str:
    """A name-like suffix unique per donor (the donor key keeps letters and digits only)."""
    letters = []
    number += 1
    while number:
        number, digit = divmod(number - 1, 26)
        letters.append(chr(ord("a") + digit))
    return "".join(reversed(letters)).capitalize()
