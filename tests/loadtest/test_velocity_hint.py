"""When most answers are the velocity check's, surge loadtest says why and how to run instead."""

from __future__ import annotations

from typing import Any

from loadtest.recorder import Outcome, classify
from loadtest.run import velocity_hint
from loadtest.traffic import Kind


def results(completed: int, blocked: int) -> dict[str, Any]:
    return {
        "totals": {
            "completed": completed,
            "outcomes": {"accepted": completed - blocked, "blocked": blocked},
            "statuses": {"201": completed - blocked, "429": blocked},
        }
    }


def test_a_challenge_is_a_block_not_an_error() -> None:
    assert classify(Kind.CARD_TESTING, 428, "challenge_required") is Outcome.BLOCKED
    assert classify(Kind.CARD_TESTING, 429, "card_testing_suspected") is Outcome.BLOCKED


def test_the_hint_names_the_cause_and_the_setting_when_most_answers_are_blocked() -> None:
    assert velocity_hint(results(960, 60)) is None
    hint = velocity_hint(results(960, 802))
    assert hint is not None
    assert "802 of 960" in hint and "X-Forwarded-For" in hint and "SURGE_TRUSTED_PROXY_HOPS=1" in hint
