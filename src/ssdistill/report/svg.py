"""Small self-contained SVG charts for the HTML report (no plotting library, nothing fetched by the page)."""

from __future__ import annotations

import math
from html import escape

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
WIDTH, HEIGHT = 560, 300
MARGIN = {"left": 62, "right": 16, "top": 30, "bottom": 42}


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if not math.isfinite(low) or not math.isfinite(high):
        return []
    if high <= low:
        return [low]
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if m * step >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.01:
        return f"{value:.1e}"
    return f"{value:.3g}"


def _frame(title: str, xlabel: str, ylabel: str, x_range, y_range, chart_id: str) -> tuple[list[str], callable]:
    (x0, x1), (y0, y1) = x_range, y_range
    if x1 <= x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 <= y0:
        y0, y1 = y0 - 1, y1 + 1
    left, top = MARGIN["left"], MARGIN["top"]
    inner_w, inner_h = WIDTH - left - MARGIN["right"], HEIGHT - top - MARGIN["bottom"]

    def place(x: float, y: float) -> tuple[float, float]:
        return left + (x - x0) / (x1 - x0) * inner_w, top + (1 - (y - y0) / (y1 - y0)) * inner_h

    parts = [
        f'<svg class="chart" id="{escape(chart_id)}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}">',
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">{escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{inner_w}" height="{inner_h}" fill="none" stroke="#999"/>',
    ]
    for tick in _ticks(x0, x1):
        px, _ = place(tick, y0)
        parts.append(f'<line x1="{px:.1f}" y1="{top + inner_h}" x2="{px:.1f}" y2="{top + inner_h + 4}" stroke="#999"/>')
        parts.append(f'<text x="{px:.1f}" y="{top + inner_h + 16}" text-anchor="middle" font-size="11">{_fmt(tick)}</text>')
    for tick in _ticks(y0, y1):
        _, py = place(x0, tick)
        parts.append(f'<line x1="{left}" y1="{py:.1f}" x2="{left + inner_w}" y2="{py:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 6}" y="{py + 4:.1f}" text-anchor="end" font-size="11">{_fmt(tick)}</text>')
    parts.append(f'<text x="{left + inner_w / 2}" y="{HEIGHT - 8}" text-anchor="middle" font-size="12">{escape(xlabel)}</text>')
    parts.append(
        f'<text x="14" y="{top + inner_h / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 14 {top + inner_h / 2})">{escape(ylabel)}</text>'
    )
    return parts, place


def _legend(entries: list[tuple[str, str]]) -> list[str]:
    """(name, colour) boxes in the top-right corner of the plot area."""
    parts = []
    for i, (name, colour) in enumerate(entries[:10]):
        y = MARGIN["top"] + 12 + 15 * i
        x = WIDTH - MARGIN["right"] - 150
        parts.append(f'<rect x="{x}" y="{y - 8}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{x + 14}" y="{y + 1}" font-size="11">{escape(name[:24])}</text>')
    return parts


def line_chart(series: list[tuple[str, list[float], list[float]]], title: str, xlabel: str, ylabel: str, chart_id: str) -> str:
    """One polyline per (name, xs, ys); non-finite points are dropped."""
    clean = []
    for name, xs, ys in series:
        points = [(x, y) for x, y in zip(xs, ys) if math.isfinite(x) and math.isfinite(y)]
        if points:
            clean.append((name, points))
    if not clean:
        return ""
    all_x = [x for _, pts in clean for x, _ in pts]
    all_y = [y for _, pts in clean for _, y in pts]
    parts, place = _frame(title, xlabel, ylabel, (min(all_x), max(all_x)), (min(all_y), max(all_y)), chart_id)
    for i, (name, points) in enumerate(clean):
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in (place(x, y) for x, y in points))
        colour = PALETTE[i % len(PALETTE)]
        if len(points) == 1:
            px, py = place(*points[0])
            parts.append(f'<circle class="series" cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}"/>')
        else:
            parts.append(f'<polyline class="series" points="{path}" fill="none" stroke="{colour}" stroke-width="1.6"/>')
    if len(clean) > 1:
        parts += _legend([(name, PALETTE[i % len(PALETTE)]) for i, (name, _) in enumerate(clean)])
    parts.append("</svg>")
    return "\n".join(parts)


def scatter_chart(xs: list[float], ys: list[float], labels: list[int], title: str, chart_id: str, class_names: list[str] | None = None) -> str:
    """Points coloured by class (the 2-D embedding map)."""
    if not xs:
        return ""
    parts, place = _frame(title, "component 1", "component 2", (min(xs), max(xs)), (min(ys), max(ys)), chart_id)
    for x, y, label in zip(xs, ys, labels):
        px, py = place(x, y)
        parts.append(f'<circle class="series" cx="{px:.1f}" cy="{py:.1f}" r="2.2" fill="{PALETTE[label % len(PALETTE)]}" fill-opacity="0.75"/>')
    classes = sorted(set(labels))
    if len(classes) <= 10:
        name = lambda c: class_names[c] if class_names and c < len(class_names) else f"class {c}"  # noqa: E731
        parts += _legend([(name(c), PALETTE[c % len(PALETTE)]) for c in classes])
    parts.append("</svg>")
    return "\n".join(parts)
