"""Card-testing velocity behind a shared address: honest donors pass, a bot is challenged, then refused.

Every request of these tests comes from one address (the test client's), as from a campus or a carrier's NAT. The
challenge verifier is the deterministic test one (tokens starting with ``test_pass_`` pass).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.simulated.tokens import KNOWN_TOKENS, CardBehaviour
from engine.pipeline.challenge import TEST_TOKEN_PREFIX
from engine.pipeline.donation_request import BLOCKED_PAYMENT_METHOD_WORDS
from tests.e2e.conftest import Surge, donation, start_surge, surge_settings

SUCCEEDING = sorted(
    t
    for t, o in KNOWN_TOKENS.items()
    if o.behaviour is CardBehaviour.SUCCEED and not any(word in t.lower() for word in BLOCKED_PAYMENT_METHOD_WORDS)
)
DECLINING = sorted(t for t, o in KNOWN_TOKENS.items() if o.behaviour is CardBehaviour.DECLINE)
PASSED = TEST_TOKEN_PREFIX + "ok"


@pytest.fixture
async def challenging_surge(database_url: str, tmp_path: Path) -> AsyncIterator[Surge]:
    settings = surge_settings(database_url, tmp_path, processor_rate_per_s=1_000_000.0, challenge_verifier="test")
    server, client, pool, keys = await start_surge(database_url, settings)
    try:
        yield Surge(client, pool, keys, server.app)
    finally:
        await client.close()
        await pool.close()


def gift(n: int, card: str, challenge: str | None = None) -> dict[str, Any]:
    body = donation(500 + n % 50, card, first_name=f"Donor{n}", postal_code=f"{10000 + n}")
    if challenge is not None:
        body["challenge"] = challenge
    return body


def code(answer: tuple[int, dict[str, Any]]) -> tuple[int, str | None]:
    status, body = answer
    return status, body.get("error", {}).get("code")


async def test_a_nat_of_200_honest_donors_with_a_normal_decline_rate_is_not_blocked(challenging_surge: Surge) -> None:
    surge = challenging_surge
    # One in twelve cards is declined (about 8 %), each a different donor's card, spread through the evening.
    cards = [DECLINING[n % len(DECLINING)] if n % 12 == 5 else SUCCEEDING[n % len(SUCCEEDING)] for n in range(200)]
    statuses = []
    for start in range(0, 200, 10):
        answers = await asyncio.gather(*(surge.donate(gift(n, cards[n])) for n in range(start, start + 10)))
        statuses += [code(answer) for answer in answers]
    declined = sum(1 for card in cards if card in DECLINING)
    assert statuses.count((402, "card_declined")) == declined
    assert statuses.count((201, None)) == 200 - declined, [s for s in statuses if s[0] not in (201, 402)]


async def test_a_bot_cycling_cards_is_challenged_then_refused(challenging_surge: Surge) -> None:
    surge = challenging_surge
    cards = iter(DECLINING * 3)
    answers = []
    while (answer := code(await surge.donate(gift(len(answers), next(cards)))))[0] == 402:
        answers.append(answer)
    assert answer == (428, "challenge_required") and 3 <= len(answers) <= 10, answers
    # A wrong token is no pass.
    assert code(await surge.donate(gift(99, next(cards), challenge="forged"))) == (428, "challenge_required")
    # The bot solves challenges (a captcha farm) and keeps testing cards: it is refused once it is clearly card
    # testing, and a passed challenge no longer helps.
    passed = []
    while (answer := code(await surge.donate(gift(100 + len(passed), next(cards), challenge=PASSED))))[0] == 402:
        passed.append(answer)
    assert answer == (429, "card_testing_suspected") and 1 <= len(passed) <= 20, passed
    assert code(await surge.donate(gift(200, SUCCEEDING[0], challenge=PASSED))) == (429, "card_testing_suspected")


async def test_a_valid_challenge_token_passes_with_the_same_idempotency_key(challenging_surge: Surge) -> None:
    surge = challenging_surge
    for n in range(5):
        assert code(await surge.donate(gift(n, DECLINING[0]))) == (402, "card_declined")  # one card, retried
    status, body = await surge.donate(gift(50, "pm_card_visa"), key="honest-1")
    assert (status, body["error"]["code"], body["error"]["param"]) == (428, "challenge_required", "challenge")
    # The page shows the challenge; the donor passes it and the form resends the same request with its token.
    status, body = await surge.donate(gift(50, "pm_card_visa", challenge=PASSED), key="honest-1")
    assert status == 201 and body["status"] == "succeeded"
    # A retry with a fresh token is the same request (the token is not part of the donation's identity).
    status, again = await surge.donate(gift(50, "pm_card_visa", challenge=TEST_TOKEN_PREFIX + "fresh"), key="honest-1")
    assert status == 201 and again["id"] == body["id"]


async def test_one_card_retried_is_challenged_but_never_refused(challenging_surge: Surge) -> None:
    surge = challenging_surge
    answers = [code(await surge.donate(gift(0, DECLINING[0], challenge=PASSED))) for _ in range(30)]
    assert answers == [(402, "card_declined")] * 30
    assert code(await surge.donate(gift(1, DECLINING[0]))) == (428, "challenge_required")
