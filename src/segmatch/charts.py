"""The report's charts, drawn as inline SVG.

A report is built at the end of every run, so its figures are drawn directly: a plotting
library took a second of a two-second run on a small table (its import and three layout passes
per figure), for bars, lines, points and a grid of cells. Text is laid out from an estimate of
its width (the page's font decides the real one), with room to spare.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

FONT = 11.0
SMALL = 9.0
#: A character's width in font sizes, generous for a proportional sans-serif font.
CHARACTER = 0.62
AXIS_COLOUR = "#555"
GRID_COLOUR = "#eee"


def text_width(text: str, size: float = FONT) -> float:
    return len(text) * size * CHARACTER


def _number(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class Scale:
    """Maps data values in ``[low, high]`` to pixels in ``[start, end]``."""

    low: float
    high: float
    start: float
    end: float
    log: bool = False

    def __call__(self, value: float) -> float:
        low, high, value = (
            (math.log10(self.low), math.log10(self.high), math.log10(max(value, self.low)))
            if self.log
            else (self.low, self.high, value)
        )
        if high == low:
            return (self.start + self.end) / 2
        return self.start + (value - low) / (high - low) * (self.end - self.start)

    def ticks(self, count: int = 5) -> list[float]:
        if self.log:
            first, last = math.floor(math.log10(self.low)), math.ceil(math.log10(self.high))
            return [10.0**p for p in range(first, last + 1) if self.low <= 10.0**p <= self.high]
        return nice_ticks(self.low, self.high, count)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart) between ``low`` and ``high``."""
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9)
    last = math.floor(high / step + 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def padded(low: float, high: float, share: float = 0.05) -> tuple[float, float]:
    """A range with a margin, so that no mark sits on the frame."""
    if high == low:
        return low - 1.0, high + 1.0
    margin = (high - low) * share
    return low - margin, high + margin


def tick_label(value: float, ticks: Sequence[float]) -> str:
    step = min((abs(b - a) for a, b in itertools.pairwise(ticks)), default=1.0)
    if abs(value) >= 1e6 and step >= 1e5:
        return f"{value / 1e6:,.{0 if step >= 1e6 else 1}f}M"
    decimals = 0 if step >= 1 else min(6, math.ceil(-math.log10(step) - 1e-9))
    return f"{value:,.{decimals}f}"


@dataclass
class Canvas:
    """An SVG picture built from marks; ``render`` wraps it in a ``<figure>``."""

    width: float
    height: float
    parts: list[str] = field(default_factory=list)

    def rect(
        self, x: float, y: float, width: float, height: float, fill: str, **attributes: str
    ) -> None:
        extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attributes.items())
        self.parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(width, 0.0):.1f}" '
            f'height="{max(height, 0.0):.1f}" fill="{fill}"{extra}/>'
        )

    def line(
        self,
        x1: float,
        y1: float,
        x2: float,
        y2: float,
        colour: str = AXIS_COLOUR,
        *,
        width: float = 1.0,
        dash: str | None = None,
    ) -> None:
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}" '
            f'stroke-width="{width}"{dashes}/>'
        )

    def text(
        self,
        x: float,
        y: float,
        content: str,
        *,
        anchor: str = "start",
        size: float = FONT,
        colour: str = "#222",
        rotate: float = 0.0,
    ) -> None:
        turn = f' transform="rotate({rotate:.0f} {x:.1f} {y:.1f})"' if rotate else ""
        self.parts.append(
            f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" dominant-baseline="central" '
            f'font-size="{_number(size)}" fill="{colour}"{turn}>{html.escape(content)}</text>'
        )

    def marker(self, x: float, y: float, shape: str, colour: str, size: float = 6.0) -> None:
        """A point: ``o`` (disc), ``s`` (square), ``x`` (cross) or ``X`` (a bold cross)."""
        half = size / 2
        if shape == "o":
            self.parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{half:.1f}" fill="{colour}"/>')
        elif shape == "s":
            self.rect(x - half, y - half, size, size, colour)
        else:
            width = 3.2 if shape == "X" else 1.6
            self.parts.append(
                f'<path d="M{x - half:.1f} {y - half:.1f}L{x + half:.1f} {y + half:.1f}'
                f'M{x - half:.1f} {y + half:.1f}L{x + half:.1f} {y - half:.1f}" '
                f'stroke="{colour}" stroke-width="{width}"/>'
            )

    def polyline(
        self, points: Sequence[tuple[float, float]], colour: str, *, dash: str | None = None
    ) -> None:
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        coordinates = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        self.parts.append(
            f'<polyline points="{coordinates}" fill="none" stroke="{colour}" '
            f'stroke-width="1.5"{dashes}/>'
        )

    def dots(self, points: Sequence[tuple[float, float]], colour: str, size: float) -> None:
        """Many small discs as one path (a zero-length segment with a round cap each)."""
        path = "".join(f"M{x:.1f} {y:.1f}h0" for x, y in points)
        self.parts.append(
            f'<path d="{path}" stroke="{colour}" stroke-width="{size}" stroke-linecap="round" '
            'stroke-opacity="0.5"/>'
        )

    def group(self, gid: str, build: Canvas) -> None:
        self.parts.append(f'<g id="{gid}">{"".join(build.parts)}</g>')

    def render(self) -> str:
        return (
            f'<figure><svg xmlns="http://www.w3.org/2000/svg" width="{self.width:.0f}" '
            f'height="{self.height:.0f}" viewBox="0 0 {self.width:.0f} {self.height:.0f}" '
            f'font-family="inherit">{"".join(self.parts)}</svg></figure>'
        )


@dataclass(frozen=True)
class Area:
    """A plot's data area on its canvas."""

    left: float
    top: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height

    def draw(self, canvas: Canvas, gid: str | None = None) -> None:
        named = {"id": gid} if gid else {}
        canvas.rect(self.left, self.top, self.width, self.height, "none", **named)
        canvas.line(self.left, self.bottom, self.right, self.bottom)
        canvas.line(self.left, self.top, self.left, self.bottom)


def x_axis(
    canvas: Canvas,
    area: Area,
    ticks: Sequence[tuple[float, str]],
    label: str,
    *,
    rotate: float = 0.0,
) -> None:
    """Ticks at pixel positions under the area, their labels (turned by ``rotate``), a title."""
    deepest = 0.0
    for x, text in ticks:
        canvas.line(x, area.bottom, x, area.bottom + 4)
        if rotate:
            canvas.text(x + 3, area.bottom + 10, text, anchor="end", size=SMALL, rotate=rotate)
            deepest = max(deepest, text_width(text, SMALL) * math.sin(math.radians(-rotate)))
        else:
            canvas.text(x, area.bottom + 12, text, anchor="middle", size=SMALL)
    if label:
        canvas.text(
            (area.left + area.right) / 2, area.bottom + 32 + deepest, label, anchor="middle"
        )


def y_axis(
    canvas: Canvas,
    area: Area,
    ticks: Sequence[tuple[float, str]],
    label: str,
    *,
    right: bool = False,
    colour: str = "#222",
    grid: bool = False,
) -> None:
    edge = area.right if right else area.left
    side = 1 if right else -1
    if right:
        canvas.line(edge, area.top, edge, area.bottom)
    for y, text in ticks:
        if grid:
            canvas.line(area.left, y, area.right, y, GRID_COLOUR)
        canvas.line(edge, y, edge + 4 * side, y)
        canvas.text(edge + 7 * side, y, text, anchor="start" if right else "end", size=SMALL)
    if label:
        widest = max((text_width(t, SMALL) for _, t in ticks), default=0.0)
        x = edge + side * (widest + 20)
        canvas.text(
            x,
            (area.top + area.bottom) / 2,
            label,
            anchor="middle",
            colour=colour,
            rotate=90 if right else -90,
        )


def tick_marks(scale: Scale, count: int = 5) -> list[tuple[float, str]]:
    values = scale.ticks(count)
    return [(scale(v), tick_label(v, values)) for v in values]


def legend_width(entries: Sequence[tuple[str, str, str]]) -> float:
    return sum(26 + text_width(name) + 16 for _, _, name in entries)


def legend(
    canvas: Canvas,
    gid: str,
    left: float,
    top: float,
    entries: Sequence[tuple[str, str, str]],
    *,
    across: bool,
) -> None:
    """Entries ``(shape, colour, name)`` in a row (``across``) or a column from ``(left, top)``.

    A shape is a marker's (see ``Canvas.marker``), ``-`` a line or ``--`` a dashed line.
    """
    items = Canvas(0, 0)
    x, y = left, top + FONT / 2
    for shape, colour, name in entries:
        if shape in ("-", "--"):
            items.line(x, y, x + 20, y, colour, width=1.5, dash="5 3" if shape == "--" else None)
        else:
            items.marker(x + 10, y, shape, colour, 8)
        items.text(x + 26, y, name)
        if across:
            x += 26 + text_width(name) + 16
        else:
            y += FONT + 7
    canvas.group(gid, items)


def colour_between(anchors: Sequence[str], share: float) -> str:
    """The colour at ``share`` (0 to 1) along evenly spaced anchor colours."""
    share = min(max(share, 0.0), 1.0) * (len(anchors) - 1)
    index = min(int(share), len(anchors) - 2)
    low, high = anchors[index], anchors[index + 1]
    weight = share - index
    channels = (
        round(int(low[i : i + 2], 16) * (1 - weight) + int(high[i : i + 2], 16) * weight)
        for i in (1, 3, 5)
    )
    return "#" + "".join(f"{c:02x}" for c in channels)


#: Blue (below) through white to red (above): ColorBrewer's RdBu, reversed.
DIVERGING = ["#053061", "#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7",
             "#fddbc7", "#f4a582", "#d6604d", "#b2182b", "#67001f"]  # fmt: skip


# -- the chart kinds ---------------------------------------------------------------------------
@dataclass(frozen=True)
class HorizontalBar:
    row: int
    start: float
    length: float
    colour: str
    #: Where the bar sits in its row's band, from -0.5 (top) to 0.5 (bottom), and its thickness.
    offset: float = 0.0
    thickness: float = 0.7
    note: str = ""


def horizontal_bars(
    rows: Sequence[str],
    bars: Sequence[HorizontalBar],
    *,
    x_label: str,
    gid: str,
    room_for_notes: float = 0.0,
    legend_entries: Sequence[tuple[str, str, str]] = (),
    zero_line: bool = False,
) -> str:
    """One band per row, bars along x; ``room_for_notes`` widens the x range by that share."""
    band = 26.0
    label_room = max((text_width(r, SMALL) for r in rows), default=0.0) + 14
    top = 30.0 if legend_entries else 10.0
    area = Area(label_room, top, 640.0, band * len(rows))
    low = min([0.0, *(b.start for b in bars), *(b.start + b.length for b in bars)])
    high = max([1e-9, *(b.start for b in bars), *(b.start + b.length for b in bars)])
    low, high = (low, high) if low == 0 else padded(low, high)
    scale = Scale(low, high + (high - low) * room_for_notes, area.left, area.right)
    canvas = Canvas(
        max(area.right + 20, area.left + legend_width(legend_entries)), area.bottom + 50
    )
    ticks = tick_marks(scale)
    for x, _ in ticks:
        canvas.line(x, area.top, x, area.bottom, GRID_COLOUR)
    for bar in bars:
        middle = area.top + band * (bar.row + 0.5 + bar.offset)
        thick = band * bar.thickness
        left, right = sorted((scale(bar.start), scale(bar.start + bar.length)))
        canvas.rect(left, middle - thick / 2, max(right - left, 1.0), thick, bar.colour)
        if bar.note:
            canvas.text(right + 5, middle, bar.note, size=SMALL)
    if zero_line:
        canvas.line(scale(0.0), area.top, scale(0.0), area.bottom, "#888")
    area.draw(canvas, f"plot-area-{gid}")
    for i, name in enumerate(rows):
        canvas.text(area.left - 7, area.top + band * (i + 0.5), name, anchor="end", size=SMALL)
    x_axis(canvas, area, ticks, x_label)
    if legend_entries:
        legend(canvas, f"legend-{gid}", area.left, 4, legend_entries, across=True)
    return canvas.render()


def bar_chart(
    categories: Sequence[str],
    values: Sequence[float],
    colours: Sequence[str],
    *,
    x_label: str,
    y_label: str,
    notes: Sequence[str] = (),
    log: bool = False,
) -> str:
    """Vertical bars, one per category, each with its note above it."""
    low = 0.5 if log else 0.0
    high = max([1.0, *values]) * (3.0 if log else 1.12)
    probe = Scale(low, high, 0, 1, log=log)
    labels = [tick_label(v, probe.ticks()) for v in probe.ticks()]
    left = max(text_width(t, SMALL) for t in labels) + 40
    area = Area(left, 12, 640, 190)
    scale = Scale(low, high, area.bottom, area.top, log=log)
    canvas = Canvas(area.right + 20, area.bottom + 50)
    ticks = tick_marks(scale)
    y_axis(canvas, area, ticks, y_label, grid=True)
    slot = area.width / max(len(categories), 1)
    for i, (value, colour) in enumerate(zip(values, colours, strict=True)):
        x, top = area.left + slot * (i + 0.15), scale(max(value, low))
        canvas.rect(x, top, slot * 0.7, area.bottom - top, colour)
        if i < len(notes):
            canvas.text(x + slot * 0.35, top - 8, notes[i], anchor="middle", size=SMALL)
    area.draw(canvas)
    positions = [(area.left + slot * (i + 0.5), c) for i, c in enumerate(categories)]
    x_axis(canvas, area, positions, x_label)
    return canvas.render()


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float]
    colour: str
    shape: str
    dash: str | None = None
    #: Drawn against the right-hand axis.
    right: bool = False
    #: Markers only.
    joined: bool = True


def line_chart(
    xs: Sequence[float],
    series: Sequence[Series],
    *,
    x_label: str,
    left_label: str,
    right_label: str,
    marked_x: tuple[float, str, str] | None,
    gid: str,
) -> str:
    """Series over x values (one tick each), two y axes; the legend above the plot. A NaN in
    a series is a point not drawn.

    ``marked_x`` is ``(x, colour, name)`` for a dashed vertical line at that x.
    """
    sides = {
        side: [v for s in series if s.right == side for v in s.values if not math.isnan(v)]
        for side in (0, 1)
    }
    ranges = {side: padded(min(v), max(v), 0.08) for side, v in sides.items() if v}
    labels = {
        side: [tick_label(t, nice_ticks(*r)) for t in nice_ticks(*r)] for side, r in ranges.items()
    }
    widest = {side: max(text_width(t, SMALL) for t in ts) for side, ts in labels.items()}
    entries = [
        (s.shape if not s.joined else ("--" if s.dash else "-"), s.colour, s.name) for s in series
    ]
    if marked_x:
        entries.append(("--", marked_x[1], marked_x[2]))
    area = Area(widest.get(0, 0.0) + 40, 34, 600, 200)
    width = max(area.right + widest.get(1, 0.0) + 44, area.left + legend_width(entries))
    canvas = Canvas(width, area.bottom + 50)
    x_low, x_high = padded(min(xs), max(xs), 0.04)
    x_scale = Scale(x_low, x_high, area.left, area.right)
    scales = {side: Scale(low, high, area.bottom, area.top) for side, (low, high) in ranges.items()}
    for side, scale in scales.items():
        y_axis(
            canvas,
            area,
            tick_marks(scale),
            right_label if side else left_label,
            right=bool(side),
            colour=next(s.colour for s in series if s.right == side),
            grid=not side,
        )
    if marked_x:
        x = x_scale(marked_x[0])
        canvas.line(x, area.top, x, area.bottom, marked_x[1], width=1.5, dash="5 3")
    for s in series:
        scale = scales[int(s.right)]
        points = [
            (x_scale(x), scale(v)) for x, v in zip(xs, s.values, strict=True) if not math.isnan(v)
        ]
        if s.joined:
            canvas.polyline(points, s.colour, dash=s.dash)
        for x, y in points:
            canvas.marker(x, y, s.shape, s.colour, 9 if s.shape == "x" else 6)
    area.draw(canvas, f"plot-area-{gid}")
    x_axis(canvas, area, [(x_scale(x), f"{x:g}") for x in sorted(set(xs))], x_label)
    legend(canvas, f"legend-{gid}", area.left, 4, entries, across=True)
    return canvas.render()


def heatmap(
    rows: Sequence[str],
    columns: Sequence[str],
    values: Sequence[Sequence[float]],
    *,
    limit: float,
    scale_label: str,
) -> str:
    """Cells coloured from blue (``-limit``) to red (``+limit``), each with its value; the
    colour scale under them. Cells narrow (to a floor) so that many columns fit a page."""
    cell_width, cell_height = min(62.0, max(36.0, 900.0 / max(len(columns), 1))), 28.0
    left = max((text_width(r, SMALL) for r in rows), default=0.0) + 14
    area = Area(left, 10, cell_width * len(columns), cell_height * len(rows))
    turn = math.sin(math.radians(35))
    below = max((text_width(c, SMALL) * turn for c in columns), default=0.0) + 24
    bar = Area(area.left, area.bottom + below, 240, 12)
    width = max(area.right, bar.right + 10, bar.left + text_width(scale_label, SMALL)) + 10
    canvas = Canvas(width, bar.bottom + 44)
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            share = (value + limit) / (2 * limit)
            x, y = area.left + j * cell_width, area.top + i * cell_height
            canvas.rect(x, y, cell_width, cell_height, colour_between(DIVERGING, share))
            dark = abs(value) > 0.6 * limit
            canvas.text(
                x + cell_width / 2,
                y + cell_height / 2,
                f"{value:+.1f}",
                anchor="middle",
                size=SMALL,
                colour="#fff" if dark else "#222",
            )
    for i, name in enumerate(rows):
        canvas.text(
            area.left - 7, area.top + cell_height * (i + 0.5), name, anchor="end", size=SMALL
        )
    x_axis(
        canvas,
        area,
        [(area.left + cell_width * (j + 0.5), c) for j, c in enumerate(columns)],
        "",
        rotate=-35,
    )
    steps = 48
    for k in range(steps):
        canvas.rect(
            bar.left + bar.width * k / steps,
            bar.top,
            bar.width / steps + 0.6,
            bar.height,
            colour_between(DIVERGING, k / steps),
        )
    bar_scale = Scale(-limit, limit, bar.left, bar.right)
    for x, text in tick_marks(bar_scale):
        canvas.line(x, bar.bottom, x, bar.bottom + 4)
        canvas.text(x, bar.bottom + 12, text, anchor="middle", size=SMALL)
    canvas.text(bar.left, bar.bottom + 30, scale_label, size=SMALL)
    return canvas.render()


def scatter(
    groups: Sequence[tuple[str, str, Sequence[tuple[float, float]]]],
    highlighted: tuple[str, str, Sequence[tuple[float, float]]],
    *,
    x_label: str,
    y_label: str,
    gid: str,
) -> str:
    """Small translucent points per group ``(name, colour, points)``, ``highlighted`` as big
    crosses over them; the legend beside the plot."""
    every = [p for _, _, points in groups for p in points] + list(highlighted[2])
    x_low, x_high = padded(min(p[0] for p in every), max(p[0] for p in every))
    y_low, y_high = padded(min(p[1] for p in every), max(p[1] for p in every))
    probe = [tick_label(t, nice_ticks(y_low, y_high)) for t in nice_ticks(y_low, y_high)]
    area = Area(max(text_width(t, SMALL) for t in probe) + 40, 10, 480, 360)
    entries = [("o", colour, name) for name, colour, _ in groups]
    entries.append(("X", highlighted[1], highlighted[0]))
    widest = max(text_width(name) for _, _, name in entries)
    canvas = Canvas(area.right + 30 + 26 + widest + 10, area.bottom + 50)
    x_scale = Scale(x_low, x_high, area.left, area.right)
    y_scale = Scale(y_low, y_high, area.bottom, area.top)
    y_axis(canvas, area, tick_marks(y_scale), y_label, grid=True)
    for _, colour, points in groups:
        canvas.dots([(x_scale(x), y_scale(y)) for x, y in points], colour, 3.2)
    for x, y in highlighted[2]:
        canvas.marker(x_scale(x), y_scale(y), "X", highlighted[1], 12)
    area.draw(canvas, f"plot-area-{gid}")
    x_axis(canvas, area, tick_marks(x_scale), x_label)
    legend(canvas, f"legend-{gid}", area.right + 30, area.top, entries, across=False)
    return canvas.render()
