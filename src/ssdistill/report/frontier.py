"""The accuracy / latency frontier's chart and page (benchmarks/frontier.py): students as numbered dots against their
deployed latency on a log axis, the Pareto front filled and joined, and a self-contained HTML page holding the chart
and the frontier's table."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from html import escape

from ssdistill.report.html import RENDER_CHECK, STYLE, html_table
from ssdistill.report.svg import PALETTE, SCATTER_HEIGHT, TICK, Legend, draw, fmt, layout, padded


def log_ticks(low: float, high: float) -> list[tuple[float, str]]:
    """Ticks of a log10 axis spanning 10**low .. 10**high: 1, 2 and 5 times each power of ten (only the powers when
    the span is wide), as (log10 value, label)."""
    span = high - low
    steps = (1,) if span > 2.5 else (1, 2, 5) if span > 0.8 else (1, 1.5, 2, 3, 5, 7)
    ticks = []
    for power in range(math.floor(low), math.ceil(high) + 1):
        for step in steps:
            value = step * 10.0**power
            if low <= math.log10(value) <= high:
                ticks.append((math.log10(value), fmt(value)))
    return ticks


def frontier_chart(points: list[tuple[str, float, float]], front: list[int], title: str, xlabel: str, ylabel: str, chart_id: str) -> str:
    """Accuracy against cost on a log x axis: one numbered dot per (name, cost, accuracy), the legend giving each
    number's name; the points of ``front`` (indices, by cost) are filled and joined by the Pareto front's line, the
    others hollow. Each dot carries ``data-name``, ``data-x`` and ``data-y``."""
    clean = [(i, name, x, y) for i, (name, x, y) in enumerate(points) if x > 0 and math.isfinite(x) and math.isfinite(y)]
    if not clean:
        return ""
    logs = [math.log10(x) for _, _, x, _ in clean]
    x_range = padded(min(logs), max(logs), 0.06)
    legend = [Legend(f"{n + 1}: {name}", PALETTE[n % len(PALETTE)], "dot") for n, (_, name, _, _) in enumerate(clean)]
    legend.append(Legend("Pareto front", "#333333"))
    ys = [y for _, _, _, y in clean]
    lay = layout(title, xlabel, ylabel, x_range, padded(min(ys), max(ys), 0.08), legend, plot_height=SCATTER_HEIGHT, x_ticks=log_ticks(*x_range))
    on_front = [i for i in front if any(i == c[0] for c in clean)]
    where = {i: lay.place(math.log10(x), y) for i, _, x, y in clean}
    body = []
    if on_front:
        path = " ".join(f"{where[i][0]:.1f},{where[i][1]:.1f}" for i in on_front)
        body.append(f'<polyline class="front" points="{path}" fill="none" stroke="#333333" stroke-width="1.4"/>')
    for n, (i, name, x, y) in enumerate(clean):
        px, py = where[i]
        colour = PALETTE[n % len(PALETTE)]
        fill = colour if i in on_front else "white"
        body.append(
            f'<g class="point" data-name="{escape(name)}" data-x="{x!r}" data-y="{y!r}" data-front="{str(i in on_front).lower()}">'
            f"<title>{escape(name)}: {fmt(x)}, {fmt(y)}</title>"
            f'<circle class="series" cx="{px:.1f}" cy="{py:.1f}" r="4.5" fill="{fill}" stroke="{colour}" stroke-width="2"/>'
            f'<text x="{px + 6:.1f}" y="{py - 6:.1f}" font-size="{TICK - 2}">{n + 1}</text></g>'
        )
    return draw(lay, chart_id, title, body)


def frontier_page(title: str, charts: list[str], markdown: str) -> str:
    """A self-contained page (for a benchmark's figure): a title, the charts, then a markdown table and its notes
    (paragraphs) rendered as HTML."""
    table, notes = [], []
    for block in markdown.strip().split("\n\n"):
        lines = block.strip().splitlines()
        if lines and all(line.startswith("|") for line in lines):
            cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
            table = [cells[0], [row for row in cells[2:]]]
        else:
            notes.append(f'<p class="note">{escape(block.strip())}</p>')
    body = [f"<h1>{escape(title)}</h1>", f'<p class="note">written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC</p>']
    body.append("<div class='charts'>" + "".join(c for c in charts if c) + "</div>")
    if table:
        body.append(html_table(table[0], table[1]))
    body += notes
    return (
        f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><meta name='viewport' content='width=device-width, initial-scale=1'><title>{escape(title)}</title>"
        f"<style>{STYLE}</style><script>{RENDER_CHECK}</script></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
