"""One latency histogram for the load tester and the benchmarks: HDR (the ``hdrhistogram`` package), recorded in
microseconds, summarised in milliseconds.

One cap, ``LATENCY_US_MAX``: ten minutes. The benchmarks used two minutes and the load tester ten; the larger one
wins because a load test's time to charge — a donation accepted into the durable queue at the peak and charged at
the processor's pace — can honestly take minutes, while a larger cap costs nothing that matters: an HDR histogram's
precision depends on its significant figures, not its range, and five times the range adds only a few buckets.
A slower value is clamped to the cap, so that it still shows as the maximum instead of being dropped.
"""

from __future__ import annotations

from collections.abc import Iterable

from hdrh.histogram import HdrHistogram

LATENCY_US_MAX = 600_000_000  # ten minutes
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))


class LatencyHistogram:
    """Latencies from 1 µs to ``LATENCY_US_MAX`` at ``significant_figures`` (3 for totals, 2 for per-second ones)."""

    def __init__(self, significant_figures: int = 3) -> None:
        self._histogram = HdrHistogram(1, LATENCY_US_MAX, significant_figures)

    def record_us(self, microseconds: int) -> None:
        self._histogram.record_value(min(max(microseconds, 1), LATENCY_US_MAX))

    def record_ns(self, nanoseconds: int) -> None:
        self.record_us(nanoseconds // 1000)

    def record_all_ns(self, nanoseconds: Iterable[int]) -> None:
        for value in nanoseconds:
            self.record_ns(value)

    def reset(self) -> None:
        self._histogram.reset()

    @property
    def count(self) -> int:
        return int(self._histogram.get_total_count())

    def summary_ms(self) -> dict[str, float]:
        """Count, mean, p50, p90, p99, p99.9 and max in milliseconds (3 decimals); just the count when empty."""
        histogram = self._histogram
        count = histogram.get_total_count()
        if count == 0:
            return {"count": 0}
        summary: dict[str, float] = {"count": int(count), "mean": _ms(histogram.get_mean_value())}
        for name, percentile in PERCENTILES:
            summary[name] = _ms(histogram.get_value_at_percentile(percentile))
        summary["max"] = _ms(histogram.get_max_value())
        return summary


def _ms(microseconds: float) -> float:
    return round(microseconds / 1000, 3)
