"""The report's SVG charts are laid out so that nothing overlaps or leaves the chart. The geometry is measured here
independently of the layout code: every ``<text>`` of a drawn chart is boxed with the real DejaVu Sans metrics
(Pillow's FreeType), anchor and rotation taken from the SVG, and the boxes are checked against each other, the
viewBox and the plot area (the frame drawn with ``fill="none"``)."""

from __future__ import annotations

import math
import random
import re
import xml.etree.ElementTree as ET

import pytest
from PIL import ImageFont

from ssdistill.report.svg import PAD, WIDTH, _ticks, fit_title, fmt, line_chart, scatter_chart, text_width

SVG = "{http://www.w3.org/2000/svg}"
STUDENT_MAP_TITLE = "distilled mobilenetv3_small_100 (feature) (q1-feature-long-run-name): 2-D PCA of val features"
CLASSES = ["n01440764", "n02102040", "n02979186", "n03000684", "n03028079", "n03394916", "n03417042", "n03425413", "n03445777", "n03888257"]


def _fonts():
    try:
        return {False: ImageFont.truetype("DejaVuSans.ttf", 100), True: ImageFont.truetype("DejaVuSans-Bold.ttf", 100)}
    except OSError:
        pytest.skip("DejaVu Sans is not installed (fonts-dejavu-core)")


def _boxes(
    svg: str,
) -> tuple[tuple[float, float], tuple[float, float, float, float], list[tuple[str, tuple[float, float, float, float]]], ET.Element]:
    """(viewBox size, plot area, [(text, box)], root) of a chart; boxes are (x0, y0, x1, y1) of each text's line box."""
    fonts = _fonts()
    root = ET.fromstring(svg)
    _, _, width, height = map(float, root.get("viewBox").split())
    frame = next(r for r in root.iter(f"{SVG}rect") if r.get("fill") == "none")
    x, y, w, h = (float(frame.get(k)) for k in ("x", "y", "width", "height"))
    boxes = []
    for text in root.iter(f"{SVG}text"):
        size, bold = float(text.get("font-size")), text.get("font-weight") == "bold"
        content = "".join(text.itertext())
        ascent, descent = (m / 100 * size for m in fonts[bold].getmetrics())
        length = fonts[bold].getlength(content) / 100 * size
        tx, ty = float(text.get("x")), float(text.get("y"))
        start = {"middle": -length / 2, "end": -length}.get(text.get("text-anchor"), 0)
        if rotation := re.match(r"rotate\((-?[\d.]+)", text.get("transform") or ""):
            assert float(rotation.group(1)) == -90, "only quarter turns are measured here"
            box = (tx - ascent, ty - start - length, tx + descent, ty - start)  # reads upwards, glyphs left of the baseline
        else:
            box = (tx + start, ty - ascent, tx + start + length, ty + descent)
        boxes.append((content, box))
    return (width, height), (x, y, x + w, y + h), boxes, root


def _overlap(a, b, slack: float = 0.5) -> bool:
    return min(a[2], b[2]) - max(a[0], b[0]) > slack and min(a[3], b[3]) - max(a[1], b[1]) > slack


def assert_laid_out(svg: str) -> None:
    (width, height), plot, boxes, root = _boxes(svg)
    for content, box in boxes:
        assert box[0] >= 0 and box[1] >= 0 and box[2] <= width and box[3] <= height, f"{content!r} leaves the chart: {box}"
        assert not _overlap(box, plot), f"{content!r} is drawn over the plot area {plot}: {box}"
    for i, (first, a) in enumerate(boxes):
        for second, b in boxes[i + 1 :]:
            assert not _overlap(a, b), f"{first!r} {a} overlaps {second!r} {b}"
    for group in root.iter(f"{SVG}g"):  # legend marks (lines, dots) stay off the plot area too
        if group.get("class") == "legend":
            for mark in list(group.iter(f"{SVG}line")) + list(group.iter(f"{SVG}circle")):
                x = float(mark.get("x1", mark.get("cx")))
                y = float(mark.get("y1", mark.get("cy")))
                assert not (plot[0] < x < plot[2] and plot[1] < y < plot[3]), f"a legend mark at {x}, {y} is inside the plot area"


def _embedding(count: int = 500, classes: int = 10):
    rng = random.Random(0)
    labels = [i % classes for i in range(count)]
    return [rng.gauss(label % 3, 0.4) for label in labels], [rng.gauss(label // 3, 0.4) for label in labels], labels


def test_the_student_map_keeps_its_long_title_and_its_legend_off_the_points():
    xs, ys, labels = _embedding()
    svg = scatter_chart(xs, ys, labels, STUDENT_MAP_TITLE, "map", CLASSES)
    assert_laid_out(svg)
    titles = [t for t in ET.fromstring(svg).iter(f"{SVG}text") if t.get("class") == "title"]
    assert " ".join(t.text for t in titles) == STUDENT_MAP_TITLE  # wrapped, not cut
    legend = [t.text for g in ET.fromstring(svg).iter(f"{SVG}g") if g.get("class") == "legend" for t in g.iter(f"{SVG}text")]
    assert legend == CLASSES


def test_wide_y_tick_labels_push_the_axis_label_aside():
    steps = list(range(0, 2200, 10))
    lr = [2e-3 * math.sin(math.pi * s / 2200) for s in steps]
    assert_laid_out(line_chart([("lr", steps, lr)], "learning rate (q1-feature)", "step", "learning rate", "lr"))
    assert_laid_out(line_chart([("loss", steps, [1e6 + s * 1000.5 for s in steps])], "loss", "step", "loss", "big"))


def test_a_legend_of_many_long_names_wraps_below_the_plot():
    series = [(f"a-run-with-a-long-name-{i} [member_{i}]", [1, 2, 3], [i, i + 1, i + 0.5]) for i in range(12)]
    baselines = [(name, 0.5) for name, *_ in series[:3]]
    svg = line_chart(
        series, "alignment with the teacher: linear CKA, no labels (a-run-with-a-long-name)", "epochs trained", "CKA", "cka", baselines=baselines
    )
    assert_laid_out(svg)
    assert svg.count('class="legend"') == 15 and svg.count('class="baseline"') == 3


@pytest.mark.parametrize("title", ["x" * 150, "word " * 40, "short", "n" * 30 + " " + "m" * 60])
def test_any_title_fits_the_width(title):
    lines, size = fit_title(title, WIDTH - 2 * PAD)
    assert 1 <= len(lines) <= 2 and all(text_width(line, size, bold=True) <= WIDTH - 2 * PAD for line in lines)
    assert_laid_out(line_chart([("a", [0, 1], [0, 1])], title, "x", "y", "t"))


def test_one_point_and_constant_series_still_draw():
    assert_laid_out(line_chart([("a", [3], [0.5])], "one point", "epochs trained", "CKA", "one"))
    assert_laid_out(line_chart([("a", [1, 2, 3], [7.0, 7.0, 7.0]), ("b", [1, 2, 3], [7.0, 7.0, 7.0])], "flat", "epoch", "v", "flat"))
    assert line_chart([("a", [1.0], [math.nan])], "nothing", "x", "y", "none") == ""


def test_tick_values_and_labels():
    assert _ticks(0, 4, integer=True) == [0, 1, 2, 3, 4] and _ticks(0, 2, integer=True) == [0, 1, 2]
    assert _ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert [fmt(v) for v in (0, 2000, 0.15, 0.0015, 12345.5)] == ["0", "2000", "0.15", "1.5e-03", "1.2e+04"]


def test_the_svg_scales_with_its_container():
    root = ET.fromstring(line_chart([("a", [0, 1], [0, 1])], "t", "x", "y", "t"))
    assert root.get("width") == "100%" and root.get("height") is None and root.get("viewBox").startswith("0 0 ")
