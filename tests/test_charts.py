"""The report's SVG charts: well-formed pictures, round ticks, marks where the data puts them."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from segmatch.charts import (
    DIVERGING,
    HorizontalBar,
    Scale,
    Series,
    bar_chart,
    colour_between,
    heatmap,
    horizontal_bars,
    line_chart,
    nice_ticks,
    scatter,
    tick_label,
)

SVG = "{http://www.w3.org/2000/svg}"


def parsed(figure: str) -> ET.Element:
    assert figure.startswith("<figure><svg") and figure.endswith("</svg></figure>")
    return ET.fromstring(figure.removeprefix("<figure>").removesuffix("</figure>"))


def texts(svg: ET.Element) -> list[str]:
    return [t.text or "" for t in svg.iter(f"{SVG}text")]


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0.0, 1.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (0.13, 0.87, [0.2, 0.4, 0.6, 0.8]),
        (-2.5, 2.5, [-2.0, -1.0, 0.0, 1.0, 2.0]),
        (8_300, 32_000, [10_000.0, 15_000.0, 20_000.0, 25_000.0, 30_000.0]),
    ],
)
def test_ticks_are_round_values_inside_the_range(low, high, expected):
    assert nice_ticks(low, high) == pytest.approx(expected)


def test_tick_labels_carry_as_many_decimals_as_the_step_needs():
    assert [tick_label(v, [0.2, 0.4]) for v in (0.2, 0.4)] == ["0.2", "0.4"]
    assert tick_label(25_000.0, [20_000.0, 25_000.0]) == "25,000"
    assert tick_label(3_500_000.0, [3_000_000.0, 3_500_000.0]) == "3.5M"


def test_a_log_scale_ticks_at_powers_of_ten_and_places_them_evenly():
    scale = Scale(0.5, 3_000.0, 200.0, 0.0, log=True)
    assert scale.ticks() == [1.0, 10.0, 100.0, 1000.0]
    gaps = [scale(a) - scale(b) for a, b in ((1, 10), (10, 100), (100, 1000))]
    assert gaps == pytest.approx([gaps[0]] * 3)


def test_the_diverging_colours_run_from_blue_through_white_to_red():
    assert colour_between(DIVERGING, 0.0) == DIVERGING[0]
    assert colour_between(DIVERGING, 0.5) == DIVERGING[5]
    assert colour_between(DIVERGING, 1.0) == DIVERGING[-1]
    assert colour_between(DIVERGING, 7.0) == DIVERGING[-1]


def test_horizontal_bars_start_and_end_where_their_values_say():
    figure = horizontal_bars(
        ["ingest", "cluster"],
        [
            HorizontalBar(0, 0.0, 1.0, "#111111", note="1.00 s"),
            HorizontalBar(1, 1.0, 3.0, "#222222", note="3.00 s"),
        ],
        x_label="seconds",
        gid="timeline",
    )
    svg = parsed(figure)
    bars = {r.get("fill"): r for r in svg.iter(f"{SVG}rect")}
    first, second = bars["#111111"], bars["#222222"]
    # The second starts where the first ends and is three times as long.
    assert float(second.get("x")) == pytest.approx(
        float(first.get("x")) + float(first.get("width")), abs=0.2
    )
    assert float(second.get("width")) == pytest.approx(3 * float(first.get("width")), abs=0.3)
    assert {"ingest", "cluster", "1.00 s", "3.00 s", "seconds"} <= set(texts(svg))
    assert svg.find(".//*[@id='plot-area-timeline']") is not None


def test_a_series_skips_its_missing_points_and_the_legend_names_every_series():
    figure = line_chart(
        [2, 3, 4],
        [
            Series("silhouette", [0.5, 0.7, 0.6], "#aa0000", "o"),
            Series("rejected k", [math.nan, 0.7, math.nan], "#00aa00", "x", joined=False),
            Series("inertia", [300.0, 200.0, 150.0], "#0000aa", "s", "5 3", right=True),
        ],
        x_label="k",
        left_label="silhouette",
        right_label="inertia",
        marked_x=(3, "#555555", "chosen k=3"),
        gid="sweep",
    )
    svg = parsed(figure)
    legend = svg.find(".//*[@id='legend-sweep']")
    assert legend is not None
    in_legend = set(legend.iter(f"{SVG}path"))
    crosses = [
        p for p in svg.iter(f"{SVG}path") if p.get("stroke") == "#00aa00" and p not in in_legend
    ]
    assert len(crosses) == 1
    assert [t.text for t in legend.iter(f"{SVG}text")] == [
        "silhouette",
        "rejected k",
        "inertia",
        "chosen k=3",
    ]


def test_a_log_bar_chart_draws_each_bar_from_the_axis():
    figure = bar_chart(
        ["1", "2", "3"], [900.0, 40.0, 1.0], ["#123456"] * 3, x_label="n", y_label="m", log=True
    )
    svg = parsed(figure)
    bars = [r for r in svg.iter(f"{SVG}rect") if r.get("fill") == "#123456"]
    bottoms = {round(float(r.get("y")) + float(r.get("height")), 1) for r in bars}
    heights = [float(r.get("height")) for r in bars]
    assert len(bottoms) == 1 and heights[0] > heights[1] > heights[2] > 0


def test_a_heatmap_colours_each_cell_by_its_value_and_prints_it():
    figure = heatmap(
        ["segment 0", "segment 1"],
        ["spend", "visits"],
        [[2.5, 0.0], [-2.5, -1.0]],
        limit=2.5,
        scale_label="standardised",
    )
    svg = parsed(figure)
    fills = [r.get("fill") for r in svg.iter(f"{SVG}rect")][:4]
    assert fills[0] == DIVERGING[-1] and fills[1] == DIVERGING[5] and fills[2] == DIVERGING[0]
    assert {"+2.5", "+0.0", "-2.5", "-1.0", "spend", "visits"} <= set(texts(svg))


def test_a_scatter_draws_every_point_and_puts_its_legend_beside_the_plot():
    groups = [
        ("segment 0", "#aa0000", [(0.0, 0.0), (1.0, 1.0)]),
        ("segment 1", "#00aa00", [(5.0, 5.0)]),
    ]
    figure = scatter(
        groups, ("centroids", "black", [(0.5, 0.5)]), x_label="PC 1", y_label="PC 2", gid="s"
    )
    svg = parsed(figure)
    dots = {p.get("stroke"): p.get("d").count("h0") for p in svg.iter(f"{SVG}path")}
    assert dots["#aa0000"] == 2 and dots["#00aa00"] == 1
    area = svg.find(".//*[@id='plot-area-s']")
    legend_x = [float(t.get("x")) for t in svg.find(".//*[@id='legend-s']").iter(f"{SVG}text")]
    assert min(legend_x) > float(area.get("x")) + float(area.get("width"))
