"""The one latency histogram: microseconds in, milliseconds out, values clamped into range, one cap for all."""

from __future__ import annotations

import random

import pytest
from hdrh.histogram import HdrHistogram

from toolkit.latency_histogram import LATENCY_US_MAX, LatencyHistogram


def test_an_empty_histogram_reports_only_its_count() -> None:
    assert LatencyHistogram().summary_ms() == {"count": 0}
    assert LatencyHistogram().count == 0


def test_the_summary_in_milliseconds() -> None:
    histogram = LatencyHistogram()
    for milliseconds in range(1, 1001):  # 1 ms … 1 s, one of each
        histogram.record_us(milliseconds * 1000)
    summary = histogram.summary_ms()
    assert list(summary) == ["count", "mean", "p50", "p90", "p99", "p999", "max"]
    assert summary["count"] == 1000
    # Three significant figures: each value within 0.1 % of the exact one.
    for name, exact in [("mean", 500.5), ("p50", 500), ("p90", 900), ("p99", 990), ("p999", 999), ("max", 1000)]:
        assert summary[name] == pytest.approx(exact, rel=1e-3), name


def test_nanoseconds_are_recorded_as_microseconds() -> None:
    histogram = LatencyHistogram()
    histogram.record_ns(2_500_999)  # 2,500.999 µs: the fraction is dropped
    histogram.record_all_ns([1_000_000, 3_000_000])
    summary = histogram.summary_ms()
    assert summary["count"] == 3
    assert summary["max"] == pytest.approx(3.0, rel=1e-3)
    assert summary["p50"] == pytest.approx(2.5, rel=1e-3)


def test_values_out_of_range_are_clamped_not_dropped() -> None:
    histogram = LatencyHistogram()
    histogram.record_us(0)
    histogram.record_ns(-5)  # a clock read out of order
    histogram.record_us(LATENCY_US_MAX * 3)  # a hang: still shows, as the maximum
    summary = histogram.summary_ms()
    assert summary["count"] == 3
    assert summary["p50"] == 0.001  # 1 µs, the floor
    assert summary["max"] == pytest.approx(LATENCY_US_MAX / 1000, rel=1e-3)


def test_the_cap_is_ten_minutes() -> None:
    assert LATENCY_US_MAX == 10 * 60 * 1_000_000


def test_reset_empties_it() -> None:
    histogram = LatencyHistogram(2)
    histogram.record_us(10)
    histogram.reset()
    assert histogram.count == 0 and histogram.summary_ms() == {"count": 0}


@pytest.mark.parametrize("significant_figures", [2, 3])
def test_the_larger_cap_changes_no_result_below_the_smaller_one(significant_figures: int) -> None:
    # The benchmarks capped at two minutes before; an HDR histogram's buckets do not depend on its range, so every
    # value they could record summarises exactly as it did.
    rng = random.Random(7)
    values = [int(rng.lognormvariate(8, 2)) + 1 for _ in range(5000)]
    values = [min(value, 120_000_000) for value in values]
    ours = LatencyHistogram(significant_figures)
    theirs = HdrHistogram(1, 120_000_000, significant_figures)
    for value in values:
        ours.record_us(value)
        theirs.record_value(value)
    summary = ours.summary_ms()
    assert summary["max"] == round(theirs.get_max_value() / 1000, 3)
    assert summary["mean"] == round(theirs.get_mean_value() / 1000, 3)
    for name, percentile in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9)]:
        assert summary[name] == round(theirs.get_value_at_percentile(percentile) / 1000, 3)
