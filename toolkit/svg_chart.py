"""Inline SVG charts written in Python, so a page opens anywhere with no network and no JavaScript library.

One renderer for the load-test report (lines and bars over seconds, shaded phases, a log scale for latency) and the
finance dashboard (donations per minute as bars, each with its count and a tooltip). Pages that show a chart include
``CHART_CSS``: grid lines, axes and labels are styled by class.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 860, 260
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 16, 28, 40
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563")

CHART_CSS = """
.chart{display:block;margin:10px 0;max-width:100%;height:auto}.chart .title{font-weight:600;font-size:13px}
.chart .tick,.chart .legend,.chart .band-label{font-size:11px;fill:#4b5563}
.chart .axis-label{font-size:11px;fill:#6b7280}
.chart .grid{stroke:#f3f4f6}.chart .axis{stroke:#9ca3af}.chart .band-a{fill:#f9fafb}.chart .band-b{fill:#eff6ff}
.chart .empty{fill:#9ca3af}
"""


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[float, float | None]]  # (x, y); None leaves a gap
    color: str | None = None
    bars: bool = False  # draw as bars (counts per second or minute) instead of a line
    tooltips: Sequence[str] | None = None  # one per point: each bar's hover text


@dataclass(frozen=True)
class Band:
    """A shaded span of the x axis with a label: a phase of the profile."""

    label: str
    start: float
    end: float


@dataclass(frozen=True)
class Annotation:
    """A marked span (or, with ``end == start``, an instant) drawn over the plot: a fault of a chaos rehearsal.

    Each is a ``g.annotation`` carrying ``data-kind``, with its label as a ``title`` (hover text) and a short ``mark``
    written along its top edge, so that a page and its tests can read the timeline back."""

    label: str
    start: float
    end: float
    color: str = "#dc2626"
    kind: str = ""
    mark: str = ""


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        if value >= low - step * 1e-9:
            ticks.append(round(value, 10))
        value += step
    return ticks


def _label(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def render_chart(
    title: str,
    series: Sequence[Series],
    *,
    x_label: str = "seconds",
    y_label: str = "",
    log_y: bool = False,
    bands: Sequence[Band] = (),
    annotations: Sequence[Annotation] = (),
    width: int = WIDTH,
    height: int = HEIGHT,
    chart_id: str | None = None,
    x_tick_label: Callable[[float], str] = _label,
) -> str:
    """An SVG element: ``series`` as lines or bars over a shared x axis, with ticks, a legend, shaded ``bands`` and
    ``annotations`` (marked spans and instants drawn over everything else).

    Each bar is a ``rect.bar`` carrying its value in ``data-count`` (and its tooltip as a ``title``), so that a page
    and its tests can read the numbers back; a bar of zero is drawn flat rather than left out.
    """
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points if y is not None and (not log_y or y > 0)]
    plot_w = width - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = height - MARGIN_TOP - MARGIN_BOTTOM
    identity = f'id="{escape(chart_id)}" ' if chart_id else ""
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" {identity}class="chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{MARGIN_LEFT}" y="18" class="title">{escape(title)}</text>',
    ]
    if not xs or not ys:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="empty">no data</text></svg>')
        return "".join(parts)
    x_low, x_high = min(min(xs), 0.0), max(max(xs), 1.0)
    if log_y:
        y_low = 10 ** math.floor(math.log10(min(ys)))
        y_high = 10 ** math.ceil(math.log10(max(ys) * 1.0001))
        y_ticks = [10.0**e for e in range(round(math.log10(y_low)), round(math.log10(y_high)) + 1)]
    else:
        y_low, y_top = 0.0, max(ys) * 1.05 or 1.0
        y_ticks = nice_ticks(0.0, y_top)
        y_high = max(y_ticks[-1], y_top)

    def px(x: float) -> float:
        return MARGIN_LEFT + (x - x_low) / (x_high - x_low) * plot_w

    def py(y: float) -> float:
        if log_y:
            fraction = (math.log10(max(y, y_low)) - math.log10(y_low)) / (math.log10(y_high) - math.log10(y_low))
        else:
            fraction = (y - y_low) / (y_high - y_low)
        return MARGIN_TOP + plot_h - fraction * plot_h

    for index, band in enumerate(bands):
        left, right = px(max(band.start, x_low)), px(min(band.end, x_high))
        shade = "band-a" if index % 2 == 0 else "band-b"
        parts.append(
            f'<rect x="{left:.1f}" y="{MARGIN_TOP}" width="{max(right - left, 0):.1f}" height="{plot_h}" '
            f'class="{shade}"/><text x="{(left + right) / 2:.1f}" y="{MARGIN_TOP + 12}" text-anchor="middle" '
            f'class="band-label">{escape(band.label)}</text>'
        )
    for tick in y_ticks:
        y = py(tick)
        parts.append(
            f'<line x1="{MARGIN_LEFT}" x2="{width - MARGIN_RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{_label(tick)}</text>'
        )
    for tick in nice_ticks(x_low, x_high, 8):
        x = px(tick)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{MARGIN_TOP + plot_h}" y2="{MARGIN_TOP + plot_h + 4}" class="axis"/>'
            f'<text x="{x:.1f}" y="{MARGIN_TOP + plot_h + 16}" text-anchor="middle" class="tick">'
            f"{escape(x_tick_label(tick))}</text>"
        )
    parts.append(
        f'<line x1="{MARGIN_LEFT}" x2="{width - MARGIN_RIGHT}" y1="{MARGIN_TOP + plot_h}" '
        f'y2="{MARGIN_TOP + plot_h}" class="axis"/>'
        f'<line x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT}" y1="{MARGIN_TOP}" y2="{MARGIN_TOP + plot_h}" class="axis"/>'
        f'<text x="{MARGIN_LEFT + plot_w / 2}" y="{height - 6}" text-anchor="middle" class="axis-label">'
        f"{escape(x_label)}</text>"
        f'<text x="14" y="{MARGIN_TOP + plot_h / 2}" text-anchor="middle" class="axis-label" '
        f'transform="rotate(-90 14 {MARGIN_TOP + plot_h / 2})">{escape(y_label)}</text>'
    )
    bar_width = max(plot_w / max(len({x for x in xs}), 1) * 0.8, 1.0)
    legend_x = width - MARGIN_RIGHT
    for index, item in enumerate(series):
        color = item.color or PALETTE[index % len(PALETTE)]
        if item.bars:
            parts.extend(_bars(item, color, px, py, MARGIN_TOP + plot_h, bar_width, log_y))
        else:
            for run in _runs(item.points, log_y):
                coordinates = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in run)
                parts.append(f'<polyline points="{coordinates}" fill="none" stroke="{color}" stroke-width="1.6"/>')
        legend_x -= 14 + 7 * len(item.name)
        parts.append(
            f'<rect x="{legend_x:.0f}" y="9" width="10" height="10" fill="{color}"/>'
            f'<text x="{legend_x + 13:.0f}" y="18" class="legend">{escape(item.name)}</text>'
        )
    parts.extend(_annotations(annotations, px, x_low, x_high, MARGIN_TOP, plot_h))
    parts.append("</svg>")
    return "".join(parts)


def _annotations(
    annotations: Sequence[Annotation],
    px: Callable[[float], float],
    x_low: float,
    x_high: float,
    top: float,
    plot_h: float,
) -> list[str]:
    parts = []
    marked = 0
    for note in annotations:
        left, right = px(max(note.start, x_low)), px(min(max(note.end, note.start), x_high))
        color, title = escape(note.color), f"<title>{escape(note.label)}</title>"
        kind = escape(note.kind)
        if right - left < 1.5:
            shape = f'<line x1="{left:.1f}" x2="{left:.1f}" y1="{top}" y2="{top + plot_h}" stroke="{color}" ' + (
                'stroke-width="1.5" stroke-dasharray="4 3"/>'
            )
        else:
            shape = (
                f'<rect x="{left:.1f}" y="{top}" width="{right - left:.1f}" height="{plot_h}" fill="{color}" '
                'fill-opacity="0.12"/>'
            )
        marked += bool(note.mark)
        mark_y = top + plot_h - 4 - (marked % 3) * 11  # staggered, so that marks of nearby faults do not overlap
        mark = (
            f'<text x="{left + 2:.1f}" y="{mark_y:.1f}" class="band-label" fill="{color}">{escape(note.mark)}</text>'
            if note.mark
            else ""
        )
        parts.append(f'<g class="annotation" data-kind="{kind}">{title}{shape}{mark}</g>')
    return parts


def _bars(
    item: Series,
    color: str,
    px: Callable[[float], float],
    py: Callable[[float], float],
    base: float,
    bar_width: float,
    log_y: bool,
) -> list[str]:
    tooltips = item.tooltips or [""] * len(item.points)
    if len(tooltips) != len(item.points):
        raise ValueError(f"series {item.name!r}: {len(tooltips)} tooltips for {len(item.points)} points")
    bars = []
    for (x, y), tooltip in zip(item.points, tooltips, strict=True):
        if y is None or (log_y and y <= 0):
            continue
        title = f"<title>{escape(tooltip)}</title>" if tooltip else ""
        bars.append(
            f'<rect class="bar" x="{px(x) - bar_width / 2:.1f}" y="{py(y):.1f}" width="{bar_width:.1f}" '
            f'height="{max(base - py(y), 0):.1f}" fill="{color}" opacity="0.75" data-count="{y:g}">{title}</rect>'
        )
    return bars


def _runs(points: Sequence[tuple[float, float | None]], log_y: bool) -> list[list[tuple[float, float]]]:
    """Consecutive points with values: a missing value breaks the line instead of drawing it to zero."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if y is None or (log_y and y <= 0):
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append((x, y))
    return [run for run in runs if run]
