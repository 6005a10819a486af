"""Small self-contained SVG charts for the HTML report (no plotting library, nothing fetched by the page).

Every chart is laid out before it is drawn (:func:`layout`), so that no text overlaps another or leaves the chart:
the title wraps onto a second line (then shrinks) to fit the width, the legend sits below the plot in centred rows that
wrap, the y axis leaves room for its widest tick label before the axis label, x tick labels are thinned until they do
not touch, and the data ranges get a margin so that no point sits on the frame. The SVG scales with its container
(viewBox, width 100%), so a chart fits a phone's width. Text widths are estimated with DejaVu Sans's advance widths,
the widest of the common sans-serif fonts, so that text set in a narrower font fits too."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from html import escape

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
WIDTH = 520  # viewBox units; the page shows a chart at most about this many pixels wide and scales it down below that
PLOT_HEIGHT, SCATTER_HEIGHT = 210, 300  # of the plot area of a line chart, of a scatter chart
PAD, GAP, TICK_LEN = 8, 6, 4
TITLE, MIN_TITLE, LABEL, TICK, LEGEND = 16, 11, 14, 13, 13  # font sizes
ASCENT, DESCENT = 0.93, 0.24  # of the font's line box, in em (DejaVu Sans: 1901/2048 and 483/2048)
# DejaVu Sans and DejaVu Sans Bold advance widths of the characters ' ' (32) to '~' (126), in thousandths of an em
# fmt: off
_ADVANCE = (
    318, 401, 460, 838, 636, 950, 780, 275, 390, 390, 500, 838, 318, 361, 318, 337, 636, 636, 636, 636, 636, 636, 636, 636,
    636, 636, 337, 337, 838, 838, 838, 531, 1000, 684, 686, 698, 770, 632, 575, 775, 752, 295, 295, 656, 557, 863, 748, 787,
    603, 787, 695, 635, 611, 732, 684, 989, 685, 611, 685, 390, 337, 390, 838, 500, 500, 613, 635, 550, 635, 615, 352, 635,
    634, 278, 278, 579, 278, 974, 634, 612, 635, 635, 411, 521, 392, 634, 592, 818, 592, 592, 525, 636, 337, 636, 838,
)
_BOLD_ADVANCE = (
    348, 456, 521, 838, 696, 1002, 872, 306, 457, 457, 523, 838, 380, 415, 380, 365, 696, 696, 696, 696, 696, 696, 696, 696,
    696, 696, 400, 400, 838, 838, 838, 580, 1000, 774, 762, 734, 830, 683, 683, 821, 837, 372, 372, 775, 637, 995, 837, 850,
    733, 850, 770, 720, 682, 812, 774, 1103, 771, 724, 725, 457, 365, 457, 838, 500, 500, 675, 716, 593, 716, 678, 435, 716,
    712, 343, 343, 665, 343, 1042, 712, 687, 716, 716, 493, 595, 478, 712, 652, 924, 645, 652, 582, 712, 365, 712, 838,
)
# fmt: on


def text_width(text: str, size: float, bold: bool = False) -> float:
    """Estimated width of ``text`` set at ``size`` (px); a character past ASCII counts 1 em."""
    table = _BOLD_ADVANCE if bold else _ADVANCE
    return sum(table[ord(c) - 32] if 32 <= ord(c) < 127 else 1000 for c in text) / 1000 * size


def shorten(text: str, size: float, width: float, bold: bool = False) -> str:
    """``text``, cut with an ellipsis where it would be wider than ``width``."""
    if text_width(text, size, bold) <= width:
        return text
    while text and text_width(text + "…", size, bold) > width:
        text = text[:-1]
    return text.rstrip() + "…"


def fit_title(title: str, width: float) -> tuple[list[str], float]:
    """The title's lines (one, else two broken at the space that balances them) and its font size, the largest from
    TITLE down to MIN_TITLE at which every line fits ``width``; past that, the lines are cut with an ellipsis."""
    words = title.split(" ")

    def balanced(size: float) -> tuple[str, str]:
        splits = [(" ".join(words[:i]), " ".join(words[i:])) for i in range(1, len(words))]
        return min(splits, key=lambda pair: max(text_width(line, size, True) for line in pair))

    for size in range(TITLE, MIN_TITLE - 1, -1):
        if text_width(title, size, True) <= width:
            return [title], size
        if len(words) > 1 and max(text_width(line, size, True) for line in balanced(size)) <= width:
            return list(balanced(size)), size
    lines = balanced(MIN_TITLE) if len(words) > 1 else (title,)
    return [shorten(line, MIN_TITLE, width, True) for line in lines], MIN_TITLE


def _ticks(low: float, high: float, count: int = 5, integer: bool = False) -> list[float]:
    if not math.isfinite(low) or not math.isfinite(high):
        return []
    if high <= low:
        return [low]
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if m * step >= raw)
    if integer:
        step = max(1.0, round(step))
    first = math.ceil(low / step) * step
    return [round(first + i * step, 12) for i in range(int((high - first) / step + 1e-9) + 1)]


def fmt(value: float) -> str:
    if value == 0:
        return "0"
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    if abs(value) >= 1000 or abs(value) < 0.01:
        return f"{value:.1e}"
    return f"{value:.3g}"


@dataclass(frozen=True)
class Legend:
    """One legend entry: a name, its colour and its mark (line, dash: a dashed line, dot)."""

    name: str
    colour: str
    mark: str = "line"


@dataclass
class Layout:
    """Where everything of a chart goes, in viewBox units."""

    width: float
    height: float
    title: list[tuple[str, float]]  # (line, baseline)
    title_size: float
    plot: tuple[float, float, float, float]  # the plot area: x, y, width, height
    x_ticks: list[tuple[float, str, float]]  # (value, label, x)
    y_ticks: list[tuple[float, str, float]]  # (value, label, y)
    x_label: tuple[str, float]  # (text, baseline)
    y_label: tuple[str, float]  # (text, baseline x of the rotated label)
    legend: list[tuple[Legend, str, float, float]]  # (entry, shown name, x of its mark, baseline)
    place: Callable[[float, float], tuple[float, float]]  # (x, y) value -> its point
    x_range: tuple[float, float]  # the values at the plot area's left and right edges
    y_range: tuple[float, float]  # at its bottom and top edges
    x_tick_base: float  # the baseline of the x tick labels


def padded(low: float, high: float, share: float) -> tuple[float, float]:
    if high <= low:
        half = abs(low) * 0.1 or 1.0
        return low - half, high + half
    margin = (high - low) * share
    return low - margin, high + margin


def layout(
    title: str,
    xlabel: str,
    ylabel: str,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    legend: list[Legend],
    integer_x: bool = False,
    plot_height: float = PLOT_HEIGHT,
    x_ticks: list[tuple[float, str]] | None = None,
) -> Layout:
    """The chart's geometry for data spanning ``x_range`` and ``y_range`` (already padded); ``x_ticks``: (value, label)
    of each x tick instead of evenly spaced values (a log axis: the values are logarithms, the labels are not)."""
    (x0, x1), (y0, y1) = x_range, y_range
    if x1 <= x0:
        x0, x1 = padded(x0, x1, 0)
    if y1 <= y0:
        y0, y1 = padded(y0, y1, 0)
    lines, title_size = fit_title(title, WIDTH - 2 * PAD)
    step = 1.2 * title_size + 4  # room for the line boxes a browser rounds up at small sizes (a phone)
    title = [(line, PAD + ASCENT * title_size + i * step) for i, line in enumerate(lines)]
    top = title[-1][1] + DESCENT * title_size + GAP + 0.6 * TICK
    y_ticks = [(v, fmt(v)) for v in _ticks(y0, y1, count=6)]
    x_ticks = [(v, fmt(v)) for v in _ticks(x0, x1, integer=integer_x)] if x_ticks is None else [t for t in x_ticks if x0 <= t[0] <= x1]
    widest_y = max((text_width(label, TICK) for _, label in y_ticks), default=0)
    left = PAD + (ASCENT + DESCENT) * LABEL + GAP + widest_y + GAP
    right = PAD + max((text_width(label, TICK) / 2 for _, label in x_ticks), default=0)
    plot_w, plot_h = WIDTH - left - right, plot_height

    def place(x: float, y: float) -> tuple[float, float]:
        return left + (x - x0) / (x1 - x0) * plot_w, top + (1 - (y - y0) / (y1 - y0)) * plot_h

    placed_x = [(v, label, place(v, y0)[0]) for v, label in x_ticks]
    every = 1
    while every < len(placed_x) and any(
        b[2] - a[2] < (text_width(a[1], TICK) + text_width(b[1], TICK)) / 2 + GAP for a, b in zip(placed_x[::every], placed_x[every::every])
    ):
        every += 1
    placed_x = placed_x[::every]
    placed_y = [(v, label, place(x0, v)[1]) for v, label in y_ticks]
    x_tick_base = top + plot_h + TICK_LEN + 4 + ASCENT * TICK
    x_label_base = x_tick_base + DESCENT * TICK + GAP / 2 + ASCENT * LABEL
    bottom = x_label_base + DESCENT * LABEL
    entries = []
    if legend:
        row_h, room = (ASCENT + DESCENT) * LEGEND + 5, WIDTH - 2 * PAD
        rows: list[list[tuple[Legend, str, float]]] = [[]]
        for entry in legend:
            shown = shorten(entry.name, LEGEND, room - 23)
            w = 23 + text_width(shown, LEGEND)
            row = rows[-1]
            if row and sum(e[2] for e in row) + 16 * len(row) + w > room:
                rows.append(row := [])
            row.append((entry, shown, w))
        legend_top = bottom + GAP + 2
        for r, row in enumerate(rows):
            used = sum(e[2] for e in row) + 16 * (len(row) - 1)
            x = (WIDTH - used) / 2
            for entry, shown, w in row:
                entries.append((entry, shown, x, legend_top + r * row_h + ASCENT * LEGEND))
                x += w + 16
        bottom = legend_top + len(rows) * row_h - 5
    return Layout(
        width=WIDTH,
        height=math.ceil(bottom + PAD),
        title=title,
        title_size=title_size,
        plot=(left, top, plot_w, plot_h),
        x_ticks=placed_x,
        y_ticks=placed_y,
        x_label=(shorten(xlabel, LABEL, plot_w), x_label_base),
        y_label=(shorten(ylabel, LABEL, plot_h), PAD + ASCENT * LABEL),
        legend=entries,
        place=place,
        x_range=(x0, x1),
        y_range=(y0, y1),
        x_tick_base=x_tick_base,
    )


def draw(lay: Layout, chart_id: str, aria: str, body: list[str]) -> str:
    left, top, plot_w, plot_h = lay.plot
    parts = [
        f'<svg class="chart" id="{escape(chart_id)}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {lay.width} {lay.height}" '
        f'width="100%" preserveAspectRatio="xMidYMin meet" role="img" aria-label="{escape(aria)}" font-family="DejaVu Sans, sans-serif">',
        f'<rect x="0" y="0" width="{lay.width}" height="{lay.height}" fill="white"/>',
    ]
    parts += [
        f'<text class="title" x="{lay.width / 2}" y="{base:.1f}" text-anchor="middle" font-size="{lay.title_size}" '
        f'font-weight="bold">{escape(line)}</text>'
        for line, base in lay.title
    ]
    for _, label, y in lay.y_ticks:
        parts.append(f'<line x1="{left:.1f}" y1="{y:.1f}" x2="{left + plot_w:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text class="tick y" x="{left - GAP:.1f}" y="{y + 0.35 * TICK:.1f}" text-anchor="end" font-size="{TICK}">{label}</text>')
    base = lay.x_tick_base
    for _, label, x in lay.x_ticks:
        parts.append(f'<line x1="{x:.1f}" y1="{top + plot_h:.1f}" x2="{x:.1f}" y2="{top + plot_h + TICK_LEN:.1f}" stroke="#999"/>')
        parts.append(f'<text class="tick x" x="{x:.1f}" y="{base:.1f}" text-anchor="middle" font-size="{TICK}">{label}</text>')
    spans = f'data-x-range="{lay.x_range[0]!r} {lay.x_range[1]!r}" data-y-range="{lay.y_range[0]!r} {lay.y_range[1]!r}"'
    parts.append(
        f'<rect class="plot-area" {spans} x="{left:.1f}" y="{top:.1f}" width="{plot_w:.1f}" height="{plot_h:.1f}" fill="none" stroke="#999"/>'
    )
    parts += body  # inside the plot area: the ranges have a margin around the data
    text, base = lay.x_label
    parts.append(f'<text class="label x" x="{left + plot_w / 2:.1f}" y="{base:.1f}" text-anchor="middle" font-size="{LABEL}">{escape(text)}</text>')
    text, base = lay.y_label
    middle = top + plot_h / 2
    parts.append(
        f'<text class="label y" x="{base:.1f}" y="{middle:.1f}" text-anchor="middle" font-size="{LABEL}" '
        f'transform="rotate(-90 {base:.1f} {middle:.1f})">{escape(text)}</text>'
    )
    for entry, shown, x, base in lay.legend:
        mid = base - 0.35 * LEGEND
        if entry.mark == "dot":
            mark = f'<circle cx="{x + 9:.1f}" cy="{mid:.1f}" r="4" fill="{entry.colour}"/>'
        else:
            dash = ' stroke-dasharray="4 3"' if entry.mark == "dash" else ""
            mark = f'<line x1="{x:.1f}" y1="{mid:.1f}" x2="{x + 18:.1f}" y2="{mid:.1f}" stroke="{entry.colour}" stroke-width="2"{dash}/>'
        tip = f"<title>{escape(entry.name)}</title>" if shown != entry.name else ""
        parts.append(f'<g class="legend">{tip}{mark}<text x="{x + 23:.1f}" y="{base:.1f}" font-size="{LEGEND}">{escape(shown)}</text></g>')
    parts.append("</svg>")
    return "\n".join(parts)


def _data(points: list[tuple[float, float]]) -> str:
    return " ".join(f"{x!r},{y!r}" for x, y in points)


def line_chart(
    series: list[tuple[str, list[float], list[float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    chart_id: str,
    baselines: list[tuple[str, float]] | None = None,
) -> str:
    """One polyline per (name, xs, ys), non-finite points dropped; a ``baselines`` entry (name of a series, value) is a
    dashed line across the plot in that series' colour (where the series started). Each series carries its values as
    ``data-points`` ("x,y x,y ...")."""
    clean = []
    for name, xs, ys in series:
        points = [(x, y) for x, y in zip(xs, ys) if math.isfinite(x) and math.isfinite(y)]
        if points:
            clean.append((name, points))
    if not clean:
        return ""
    colours = {name: PALETTE[i % len(PALETTE)] for i, (name, _) in enumerate(clean)}
    lines = [(name, value) for name, value in baselines or [] if name in colours and math.isfinite(value)]
    all_x = [x for _, pts in clean for x, _ in pts]
    all_y = [y for _, pts in clean for _, y in pts] + [value for _, value in lines]
    legend = []
    if len(clean) > 1 or lines:
        for name, _ in clean:
            legend.append(Legend(name, colours[name]))
            legend += [Legend(f"{name}: at start", colours[name], "dash") for line, _ in lines if line == name]
    integer_x = all(x == int(x) for x in all_x)
    x_range = padded(min(all_x), max(all_x), 0.025) if len(set(all_x)) > 1 else (min(all_x), max(all_x))
    lay = layout(title, xlabel, ylabel, x_range, padded(min(all_y), max(all_y), 0.06), legend, integer_x)
    left, _, plot_w, _ = lay.plot
    body = []
    for name, value in lines:
        _, y = lay.place(0, value)
        body.append(
            f'<line class="baseline" data-name="{escape(name)}" data-value="{value!r}" x1="{left:.1f}" y1="{y:.1f}" '
            f'x2="{left + plot_w:.1f}" y2="{y:.1f}" stroke="{colours[name]}" stroke-width="1.2" stroke-dasharray="4 3"/>'
        )
    for name, points in clean:
        colour, placed = colours[name], [lay.place(x, y) for x, y in points]
        data = f'data-name="{escape(name)}" data-points="{_data(points)}"'
        if len(points) == 1:
            body.append(f'<circle class="series" {data} cx="{placed[0][0]:.1f}" cy="{placed[0][1]:.1f}" r="3" fill="{colour}"/>')
            continue
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in placed)
        body.append(f'<polyline class="series" {data} points="{path}" fill="none" stroke="{colour}" stroke-width="1.6"/>')
        if len(points) <= 40:  # few points (per-epoch values): mark each
            body += [f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.4" fill="{colour}"/>' for px, py in placed]
    return draw(lay, chart_id, title, body)


def scatter_chart(xs: list[float], ys: list[float], labels: list[int], title: str, chart_id: str, class_names: list[str] | None = None) -> str:
    """Points coloured by class (the 2-D embedding map); the legend names the classes when there are at most 10."""
    if not xs:
        return ""
    classes = sorted(set(labels))
    name = lambda c: class_names[c] if class_names and c < len(class_names) else f"class {c}"  # noqa: E731
    legend = [Legend(name(c), PALETTE[c % len(PALETTE)], "dot") for c in classes] if len(classes) <= 10 else []
    lay = layout(
        title, "component 1", "component 2", padded(min(xs), max(xs), 0.04), padded(min(ys), max(ys), 0.04), legend, plot_height=SCATTER_HEIGHT
    )
    body = []
    for x, y, label in zip(xs, ys, labels):
        px, py = lay.place(x, y)
        body.append(f'<circle class="series" cx="{px:.1f}" cy="{py:.1f}" r="2.2" fill="{PALETTE[label % len(PALETTE)]}" fill-opacity="0.75"/>')
    return draw(lay, chart_id, title, body)
