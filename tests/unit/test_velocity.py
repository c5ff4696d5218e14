"""Velocity verdicts: declines weighed against attempts (with a minimum sample) and against distinct cards."""

from __future__ import annotations

import pytest

from engine.pipeline.velocity import SourceStats, VelocityLimits, Verdict, assess

LIMITS = VelocityLimits(challenges_enabled=True)


@pytest.mark.parametrize(
    ("stats", "verdict"),
    [
        (SourceStats(attempts=200, declines=20, declined_cards=20), Verdict.ALLOW),  # a NAT, 10 % declined
        (SourceStats(attempts=4, declines=4, declined_cards=4), Verdict.ALLOW),  # a handful is no sample
        (SourceStats(attempts=20, declines=5, declined_cards=5), Verdict.ALLOW),  # 5 / 20 = 0.25
        (SourceStats(attempts=4, declines=5, declined_cards=2), Verdict.CHALLENGE),  # 5 / max(4, 10): two cards
        (SourceStats(attempts=6, declines=6, declined_cards=1), Verdict.CHALLENGE),  # one card retried
        (SourceStats(attempts=40, declines=39, declined_cards=1), Verdict.CHALLENGE),  # … is never refused
        (SourceStats(attempts=200, declines=70, declined_cards=60), Verdict.CHALLENGE),  # a NAT with a bot in it
        (SourceStats(attempts=12, declines=12, declined_cards=4), Verdict.REFUSE),  # many cards, all declined
        (SourceStats(attempts=200, declines=150, declined_cards=30), Verdict.REFUSE),
    ],
)
def test_verdicts(stats: SourceStats, verdict: Verdict) -> None:
    assert assess(stats, LIMITS) is verdict


def test_without_a_challenge_verifier_moderate_suspicion_is_allowed_and_card_testing_refused() -> None:
    limits = VelocityLimits(challenges_enabled=False)
    assert assess(SourceStats(attempts=6, declines=6, declined_cards=1), limits) is Verdict.ALLOW
    assert assess(SourceStats(attempts=12, declines=12, declined_cards=4), limits) is Verdict.REFUSE


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="ratios"):
        VelocityLimits(challenge_ratio=0.7, refuse_ratio=0.6)
    with pytest.raises(ValueError, match="sample_min"):
        VelocityLimits(sample_min=300, sample_max=200)
