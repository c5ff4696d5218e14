"""The arrival schedule is exact and pure: each second holds the profile's rate integrated over it."""

from __future__ import annotations

import math
import time

import pytest

from loadtest.profiles import Arrivals, Profile, ProfileName, arrival_times, per_second


@pytest.mark.parametrize("name", [p.value for p in ProfileName])
def test_uniform_arrivals_match_the_profile_second_by_second(name: str) -> None:
    profile = Profile.named(name, rate_per_s=40, duration_s=60, peak_multiplier=6)
    times = arrival_times(profile)
    expected = profile.expected_per_second()
    counts = per_second(times, profile.duration_s)
    assert len(counts) == len(expected) == 60
    for second, (count, wanted) in enumerate(zip(counts, expected, strict=True)):
        assert abs(count - wanted) <= 1.0, (second, count, wanted)
    assert abs(len(times) - sum(expected)) <= 1
    assert times == sorted(times) and times[0] >= 0 and times[-1] < profile.duration_s


def test_deadline_shape_baseline_surge_peak_tail() -> None:
    profile = Profile.named("deadline", rate_per_s=20, duration_s=100, peak_multiplier=10)
    assert profile.rate_at(5) == pytest.approx(20)
    surge = [profile.rate_at(t) for t in range(21, 55)]
    assert surge == sorted(surge) and surge[0] < surge[-1] < 200
    assert profile.rate_at(60) == pytest.approx(200) and profile.rate_at(74) == pytest.approx(200)
    assert profile.rate_at(76) < 70 and profile.rate_at(99) < 20
    assert [p.name for p in profile.phases()] == ["baseline", "surge", "deadline", "tail"]
    counts = per_second(arrival_times(profile), profile.duration_s)
    assert max(counts) in (200, 201) and counts[10] in (19, 20, 21)


def test_spike_and_ramp_reach_the_peak() -> None:
    spike = Profile.named("spike", rate_per_s=10, duration_s=100, peak_multiplier=8)
    assert [spike.rate_at(t) for t in (10, 50, 90)] == [10, 80, 10]
    ramp = Profile.named("ramp", rate_per_s=10, duration_s=100, peak_multiplier=5)
    assert ramp.rate_at(0) == pytest.approx(10) and ramp.rate_at(99.99) == pytest.approx(50, rel=0.01)


def test_schedule_is_pure_and_seeded() -> None:
    profile = Profile.named("steady", rate_per_s=50, duration_s=20)
    assert arrival_times(profile) == arrival_times(profile)
    first = arrival_times(profile, Arrivals.POISSON, seed=7)
    assert first == arrival_times(profile, Arrivals.POISSON, seed=7)
    assert first != arrival_times(profile, Arrivals.POISSON, seed=8)


def test_poisson_arrivals_keep_the_rate_within_statistical_tolerance() -> None:
    profile = Profile.named("steady", rate_per_s=200, duration_s=30)
    counts = per_second(arrival_times(profile, Arrivals.POISSON, seed=3), profile.duration_s)
    assert abs(sum(counts) - 6000) < 5 * math.sqrt(6000)
    assert all(abs(count - 200) < 6 * math.sqrt(200) for count in counts)
    assert len(set(counts)) > 5  # bursty, not evenly paced


def test_schedule_is_fast_enough_to_build_before_a_run() -> None:
    started = time.perf_counter()
    times = arrival_times(Profile.named("deadline", rate_per_s=100, duration_s=150, peak_multiplier=10))
    assert len(times) > 50_000
    assert time.perf_counter() - started < 2.0


def test_profiles_refuse_nonsense() -> None:
    for rate, duration, peak in ((0, 10, 1), (10, 0, 1), (10, 10, 0.5), (float("nan"), 10, 1)):
        with pytest.raises(ValueError):
            Profile(ProfileName.STEADY, rate, duration, peak)
