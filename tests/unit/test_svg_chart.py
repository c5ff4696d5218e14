"""The one SVG chart: lines with gaps, bars that carry their values and tooltips, ticks, log scale, escaping."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree

import pytest

from toolkit.svg_chart import Band, Series, nice_ticks, render_chart

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ElementTree.Element:
    return ElementTree.fromstring(svg)  # well-formed XML, or this raises


def test_nice_ticks_are_round_numbers_covering_the_range() -> None:
    assert nice_ticks(0, 100) == [0, 20, 40, 60, 80, 100]
    assert nice_ticks(0, 59, 8) == [0, 10, 20, 30, 40, 50]
    assert nice_ticks(0, 1.05) == [0, 0.25, 0.5, 0.75, 1.0]
    assert nice_ticks(5, 5) == [5, 5.2, 5.4, 5.6, 5.8, 6]  # an empty range is widened to one unit


def test_an_empty_chart_says_so() -> None:
    svg = render_chart("Nothing", [Series("a", [])])
    root = parse(svg)
    assert [text.text for text in root.iter(f"{SVG}text")] == ["Nothing", "no data"]


def test_a_line_breaks_at_missing_values_instead_of_dropping_to_zero() -> None:
    svg = render_chart("Gaps", [Series("depth", [(0, 1), (1, 2), (2, None), (3, 4), (4, 5)])])
    lines = parse(svg).findall(f"{SVG}polyline")
    assert len(lines) == 2
    assert [len(line.attrib["points"].split()) for line in lines] == [2, 2]


def test_bars_carry_their_values_and_tooltips_and_zero_bars_are_drawn_flat() -> None:
    bars = Series("donations", [(0, 3), (1, 0), (2, None), (3, 1)], bars=True, tooltips=["a", "b", "c", "d & e"])
    svg = render_chart("Per minute", [bars], chart_id="donations-chart")
    root = parse(svg)
    assert root.attrib["id"] == "donations-chart" and root.attrib["aria-label"] == "Per minute"
    drawn = [rect for rect in root.iter(f"{SVG}rect") if rect.attrib.get("class") == "bar"]
    assert [rect.attrib["data-count"] for rect in drawn] == ["3", "0", "1"]  # the missing value has no bar
    assert [rect.find(f"{SVG}title").text for rect in drawn] == ["a", "b", "d & e"]  # type: ignore[union-attr]
    heights = [float(rect.attrib["height"]) for rect in drawn]
    assert heights[1] == 0 and heights[0] == pytest.approx(3 * heights[2], rel=0.01)
    # Bars stand on the x axis.
    bottoms = {round(float(rect.attrib["y"]) + float(rect.attrib["height"]), 1) for rect in drawn}
    assert len(bottoms) == 1


def test_tooltips_must_match_the_points() -> None:
    with pytest.raises(ValueError, match="tooltips"):
        render_chart("Bad", [Series("x", [(0, 1), (1, 2)], bars=True, tooltips=["only one"])])


def test_a_log_scale_has_decade_ticks_and_skips_values_it_cannot_place() -> None:
    svg = render_chart("Latency", [Series("p99", [(0, 0.5), (1, 40.0), (2, 0.0), (3, 2000.0)])], log_y=True)
    ticks = [t.text for t in parse(svg).iter(f"{SVG}text") if t.attrib.get("class") == "tick"]
    assert ticks[:5] == ["0.1", "1", "10", "100", "1000"]
    assert ticks[5] == "10k"  # large values are abbreviated
    assert len(parse(svg).findall(f"{SVG}polyline")) == 2  # the zero breaks the line


def test_x_tick_labels_can_be_named_by_the_caller() -> None:
    labels = {0.0: "12:00", 10.0: "12:10"}
    svg = render_chart(
        "Minutes", [Series("n", [(float(x), 1) for x in range(12)])], x_tick_label=lambda x: labels.get(x, "?")
    )
    ticks = [t.text for t in parse(svg).iter(f"{SVG}text") if t.attrib.get("class") == "tick"]
    assert ticks[-6:] == ["12:00", "?", "?", "?", "?", "12:10"]  # x ticks every 2 of 0…11, after the y ticks


def test_bands_legend_and_text_are_escaped() -> None:
    svg = render_chart(
        "A <b> & c",
        [Series("x<y", [(0, 1), (10, 2)]), Series("z", [(0, 2), (10, 1)], color="#123456")],
        bands=[Band("warm-up", 0, 5), Band("peak & after", 5, 10)],
        y_label="per <s>",
    )
    assert "<b>" not in svg and "x<y" not in svg
    root = parse(svg)
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "A <b> & c" in texts and "peak & after" in texts and "x<y" in texts and "per <s>" in texts
    assert {rect.attrib.get("class") for rect in root.iter(f"{SVG}rect")} >= {"band-a", "band-b"}
    strokes = [line.attrib["stroke"] for line in root.findall(f"{SVG}polyline")]
    assert strokes == ["#2563eb", "#123456"]  # the palette's first colour, then the series' own


def test_the_output_is_deterministic() -> None:
    series = [Series("a", [(x, x * x) for x in range(20)]), Series("b", [(x, 3) for x in range(20)], bars=True)]
    first = render_chart("Same", series)
    assert first == render_chart("Same", series)
    assert re.fullmatch(r"<svg .*</svg>", first, re.DOTALL)
