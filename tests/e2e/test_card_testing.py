"""Card-testing velocity behind a shared address: honest donors pass, a bot is challenged, then refused.

Every request of these tests comes from one address (the test client's), as from a campus or a carrier's NAT. The
challenge verifier is the deterministic test one (tokens starting with ``test_pass_`` pass).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from adapters.simulated import SimulatedProcessor
from adapters.simulated.tokens import KNOWN_TOKENS, CardBehaviour
from engine.api.state import PIPELINE, PROCESSORS
from engine.pipeline.challenge import TEST_TOKEN_PREFIX
from engine.pipeline.donation_request import BLOCKED_PAYMENT_METHOD_WORDS
from engine.pipeline.donations import PROCESSING_STATUSES
from engine.pipeline.velocity import VELOCITY_DECLINE_CODE
from tests.e2e.conftest import Surge, donation, running_surge, surge_settings
from tests.waiting import wait_until

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
    async with running_surge(database_url, settings) as running:
        yield running


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


BOT_ADDRESS = "203.0.113.66"
HONEST_ADDRESS = "198.51.100.7"  # a NAT: one of its donors keeps retrying an expired card


@pytest.fixture
async def proxied_surge(database_url: str, tmp_path: Path) -> AsyncIterator[Surge]:
    """Behind one proxy (X-Forwarded-For names the client), with a few processor slots a test can hold."""
    settings = surge_settings(
        database_url,
        tmp_path,
        processor_rate_per_s=1_000_000.0,
        processor_concurrency_max=4,
        trusted_proxy_hops=1,
        challenge_verifier="test",
    )
    async with running_surge(database_url, settings) as running:
        yield running


def sent_from(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def test_queued_donations_of_a_source_turned_card_testing_are_failed_without_a_charge(
    proxied_surge: Surge,
) -> None:
    surge = proxied_surge
    processor, gate = surge.app[PROCESSORS][0]
    assert isinstance(processor, SimulatedProcessor)
    # Every processor slot taken: both sources' donations wait in the durable queue (202), their sources clean.
    held = 0
    while gate.try_acquire():
        held += 1
    bot = [await surge.donate(gift(n, SUCCEEDING[n % len(SUCCEEDING)]), **sent_from(BOT_ADDRESS)) for n in range(6)]
    honest = [await surge.donate(gift(50 + n, SUCCEEDING[n]), **sent_from(HONEST_ADDRESS)) for n in range(3)]
    assert [status for status, _ in bot + honest] == [202] * 9, bot + honest
    # They wait (not yet due) while declines pile up: the bot cycles cards, passing challenges, until refused; the
    # NAT's donor retries one card, which makes the address suspicious (a challenge) but never refused.
    await surge.pool.execute("UPDATE surge.donations SET next_attempt_at = now() + interval '1 hour'")
    for _ in range(held):
        gate.return_unused()
    bot_declines = [
        code(await surge.donate(gift(10 + n, DECLINING[n], challenge=PASSED), **sent_from(BOT_ADDRESS)))
        for n in range(6)
    ]
    assert bot_declines == [(402, "card_declined")] * 6
    assert code(await surge.donate(gift(20, SUCCEEDING[0]), **sent_from(BOT_ADDRESS))) == (
        429,
        "card_testing_suspected",
    )
    retries = [code(await surge.donate(gift(60, DECLINING[0]), **sent_from(HONEST_ADDRESS))) for _ in range(5)]
    assert retries == [(402, "card_declined")] * 5
    assert code(await surge.donate(gift(61, SUCCEEDING[0]), **sent_from(HONEST_ADDRESS))) == (428, "challenge_required")
    # Now they fall due and the queue takes them.
    await surge.pool.execute("UPDATE surge.donations SET next_attempt_at = now() WHERE status = 'queued'")
    surge.app[PIPELINE].wake()
    ids = [body["id"] for _, body in bot + honest]

    async def decided() -> list[asyncpg.Record] | None:
        rows = await surge.pool.fetch(
            "SELECT id, status, processor, decline_code FROM surge.donations WHERE id = ANY($1) ORDER BY id", ids
        )
        return None if any(row["status"] in PROCESSING_STATUSES for row in rows) else rows

    outcomes = {row["id"]: row for row in await wait_until(decided, timeout=15, what="the queued donations decided")}
    for _, body in bot:
        row = outcomes[body["id"]]
        assert (row["status"], row["processor"], row["decline_code"]) == ("failed", None, VELOCITY_DECLINE_CODE)
    assert [outcomes[body["id"]]["status"] for _, body in honest] == ["succeeded"] * 3
    charged = {charge.donation_id for charge in await processor.charges()}
    assert not charged & {body["id"] for _, body in bot}, "a refused source's queued donation reached the processor"
    assert {body["id"] for _, body in honest} <= charged
    # Their holds are released like any failure's, and the donor reads why.
    assert await surge.pool.fetchval("SELECT sum(held_minor) FROM surge.contribution_aggregates") == 0
    read = await surge.client.get(f"/v1/donations/{bot[0][1]['id']}", headers=surge.auth())
    assert (await read.json())["status"] == "failed"
    # Never tried at a processor, they are no attempts: they do not dilute the bot's decline ratio back to allowed.
    assert code(await surge.donate(gift(21, SUCCEEDING[1]), **sent_from(BOT_ADDRESS))) == (
        429,
        "card_testing_suspected",
    )
