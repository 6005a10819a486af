"""The HTML report of one and of several runs, looked at in a real headless browser (Debian's chromium): its charts
render, every monitor the run logged is plotted with the values of metrics.csv (the alignment monitor, a curve per member
of a cohort, a monitor the report has never heard of), and at a desktop and a phone width no text of a chart overlaps
another, leaves its chart or lies on the plot, and the page does not scroll sideways."""

import csv
import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from html import unescape as html_unescape

import pytest
from PIL import Image

from ssdistill import distill
from ssdistill.cli import main
from ssdistill.report.html import build_report
from ssdistill.report.svg import PALETTE

from integration.common import tiny_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("report")
    runs = []
    for name, method in (("feat", {"name": "feature", "projector_hidden": [32]}), ("seedrun", {"name": "seed", "teacher_view": "original"})):
        config = tiny_config(
            tmp_path,
            method=method,
            run={"name": name},
            eval={"teacher": True, "random_init": True, "suite": "full", "monitor_every": 1, "align_images": 64},
            trainer={"epochs": 2, "log_every_n_steps": 1},
        )
        if name == "seedrun":
            config["method"].pop("projector_hidden")
        distill(config, quiet=True)
        runs.append(tmp_path / "runs" / name)
    return runs


@pytest.fixture(scope="module")
def cohort_run(tmp_path_factory):
    """An MCL cohort (members student and peer1) with the teacher evaluated, so that each member's alignment with it is
    monitored."""
    tmp_path = tmp_path_factory.mktemp("cohort")
    config = tiny_config(tmp_path, method={"name": "mcl"}, run={"name": "cohort"}, trainer={"epochs": 2}, eval={"teacher": True, "align_images": 32})
    config["method"].pop("projector_hidden")
    distill(config, quiet=True)
    return tmp_path / "runs" / "cohort"


SVG = "{http://www.w3.org/2000/svg}"
# run in the page after it has loaded: every text of every chart, as the browser laid it out, against the others, its
# chart and the chart's plot area; and whether the page is wider than the window
LAYOUT_CHECK = """<script>
window.addEventListener('load', () => {
  const overlap = (a, b) => Math.min(a.right, b.right) - Math.max(a.left, b.left) > 0.5 && Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 0.5;
  const problems = [];
  for (const svg of document.querySelectorAll('svg.chart')) {
    const chart = svg.getBoundingClientRect(), plot = svg.querySelector('.plot-area').getBoundingClientRect();
    const texts = [...svg.querySelectorAll('text')].map(t => [t.textContent, t.getBoundingClientRect()]);
    texts.forEach(([text, box], i) => {
      if (box.left < chart.left - 0.5 || box.right > chart.right + 0.5 || box.top < chart.top - 0.5 || box.bottom > chart.bottom + 0.5)
        problems.push(`${svg.id}: '${text}' leaves the chart`);
      if (overlap(box, plot)) problems.push(`${svg.id}: '${text}' lies on the plot area`);
      texts.slice(i + 1).forEach(([other, b]) => { if (overlap(box, b)) problems.push(`${svg.id}: '${text}' overlaps '${other}'`); });
    });
  }
  const charts = document.querySelectorAll('svg.chart').length;
  document.body.setAttribute('data-layout', JSON.stringify({window: window.innerWidth, page: document.documentElement.scrollWidth, charts, problems}));
});
</script>"""


def _metrics(run):
    with (run / "metrics.csv").open() as file:
        return list(csv.DictReader(file))


def _chart(page, chart_id):
    html = page.read_text()
    start = html.index(f'<svg class="chart" id="{chart_id}"')
    return ET.fromstring(html[start : html.index("</svg>", start) + len("</svg>")])


def _curves(svg):
    """name -> [(x, y)] of every curve of a chart, the values it carries (``data-points``), checked against where its
    points are drawn: each drawn point, read back through the plot area's edges and the values they stand for, is
    within 0.1 px of its value."""
    frame = next(r for r in svg.iter(f"{SVG}rect") if r.get("class") == "plot-area")
    left, top, width, height = (float(frame.get(k)) for k in ("x", "y", "width", "height"))
    (x0, x1), (y0, y1) = (tuple(map(float, frame.get(f"data-{a}-range").split())) for a in "xy")
    curves = {}
    for line in svg.iter(f"{SVG}polyline"):
        values = [tuple(map(float, p.split(","))) for p in line.get("data-points").split()]
        drawn = [tuple(map(float, p.split(","))) for p in line.get("points").split()]
        assert len(drawn) == len(values)
        for (x, y), (px, py) in zip(values, drawn):
            assert abs(x0 + (px - left) / width * (x1 - x0) - x) <= 0.1 * (x1 - x0) / width
            assert abs(y1 - (py - top) / height * (y1 - y0) - y) <= 0.1 * (y1 - y0) / height
        curves[line.get("data-name")] = values
    return curves


def _monitor_curve(rows, column):
    """(0, start) and (epochs trained, value) of a monitor column, as metrics.csv holds them."""
    start = [(0.0, float(r[column + "_start"])) for r in rows if r.get(column + "_start")]
    return start + [(int(r["epoch"]) + 1.0, float(r[column])) for r in rows if r.get(column)]


def _browser():
    if CHROMIUM is None:
        if os.environ.get("SSDISTILL_REQUIRE_BROWSER"):
            pytest.fail("chromium is required here (apt-get install chromium)")
        pytest.skip("no chromium on this machine (.ci/run installs it)")
    return [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=3000"]


def _body_attribute(page, name, width=800):
    """The JSON a load handler of the page left in the body's ``name`` attribute, the page opened in a window
    ``width`` px wide."""
    dom = subprocess.run(
        [*_browser(), "--allow-file-access-from-files", f"--window-size={width},2000", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    marker = f'{name}="'
    assert marker in dom, "the page's load handler did not run"
    return json.loads(html_unescape(dom.split(marker, 1)[1].split('"', 1)[0]))


def _rendered_charts(page):
    return _body_attribute(page, "data-rendered")


def test_one_run_report_renders_its_plots_in_chromium(two_runs, tmp_path, capsys):
    main(["report", str(two_runs[0])])
    page = two_runs[0] / "report.html"
    html = page.read_text()
    assert not any(ref in html for ref in ('src="', "href=", "<link", "url(")), "the page must not fetch anything"
    assert "% of teacher retained" in html and "linear" in html and "method:" in html  # table and resolved config
    charts = {c["id"]: c for c in _rendered_charts(page)}
    assert {"loss-feat", "lr-feat", "knn-feat", "map-student-feat", "map-teacher-feat"} <= set(charts)
    for chart in charts.values():
        assert chart["width"] > 400 and chart["height"] > 200 and chart["series"] >= 1, chart
    assert charts["map-student-feat"]["series"] == 500  # one dot per val image
    shot = tmp_path / "page.png"
    subprocess.run([*_browser(), f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri()], capture_output=True, timeout=120, check=True)
    pixels = Image.open(shot).convert("RGB")
    colours = {tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in PALETTE[:3]}
    painted = sum(1 for p in pixels.getdata() if p in colours)
    assert painted > 500, f"only {painted} pixels in the plot colours"


def test_several_runs_give_a_comparison_and_a_markdown_table(two_runs, tmp_path, capsys):
    output = tmp_path / "both.html"
    main(["report", *map(str, two_runs), "--output", str(output)])
    charts = {c["id"] for c in _rendered_charts(output)}
    assert {"loss-all", "knn-all", "map-student-feat", "map-student-seedrun"} <= charts
    capsys.readouterr()
    main(["report", *map(str, two_runs), "--markdown"])
    table = capsys.readouterr().out
    assert table.startswith("| run | model |") and "| feat | feature |" in table and "| seedrun | seed |" in table


def test_report_of_an_unfinished_run_says_how_to_finish_it(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("method: {name: feature}\n")
    with pytest.raises(SystemExit):
        main(["report", str(tmp_path)])
    assert "has not finished" in capsys.readouterr().err


def test_the_alignment_monitor_is_plotted_with_the_values_the_run_logged(two_runs, tmp_path):
    page = build_report([two_runs[0]], tmp_path / "report.html")
    rows = _metrics(two_runs[0])
    expected = _monitor_curve(rows, "monitor/teacher_cka")
    assert len(expected) == 3 and expected[0][0] == 0  # the start, then after each of the 2 epochs
    svg = _chart(page, "monitor-teacher-cka-feat")
    assert _curves(svg) == {"student": expected}
    baselines = [e for e in svg.iter(f"{SVG}line") if e.get("class") == "baseline"]
    assert [float(e.get("data-value")) for e in baselines] == [expected[0][1]]  # the dashed start line
    legend = [t.text for g in svg.iter(f"{SVG}g") if g.get("class") == "legend" for t in g.iter(f"{SVG}text")]
    assert legend == ["student", "student: at start"]
    knn = _curves(_chart(page, "knn-feat"))  # the k-NN monitor's curves come from metrics.csv the same way
    assert knn == {"student": _monitor_curve(rows, "monitor/knn_top1")}
    assert _curves(_chart(page, "knn-top5-feat")) == {"student": _monitor_curve(rows, "monitor/knn_top5")}


def test_a_cohort_gets_a_curve_per_member_and_the_overlay_one_per_run_and_member(cohort_run, two_runs, tmp_path):
    page = build_report([cohort_run], tmp_path / "cohort.html")
    rows = _metrics(cohort_run)
    svg = _chart(page, "monitor-teacher-cka-cohort")
    curves = _curves(svg)
    assert list(curves) == ["student", "peer1"]  # the run's order of members
    assert curves["student"] == _monitor_curve(rows, "monitor/teacher_cka") and len(curves["student"]) == 3
    assert curves["peer1"] == _monitor_curve(rows, "monitor/peer1/teacher_cka")
    assert [e.get("data-name") for e in svg.iter(f"{SVG}line") if e.get("class") == "baseline"] == ["student", "peer1"]
    both = build_report([two_runs[0], cohort_run], tmp_path / "both.html")
    overlaid = _curves(_chart(both, "monitor-teacher-cka-all"))
    assert list(overlaid) == ["feat", "cohort", "cohort [peer1]"] and overlaid["cohort [peer1]"] == curves["peer1"]


def test_a_monitor_the_report_does_not_know_is_plotted_too(two_runs, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(two_runs[0], run, ignore=shutil.ignore_patterns("checkpoints", "features", "report.html"))
    rows = _metrics(run)
    for row in rows:
        row["monitor/feature_rank"] = str(int(row["epoch"]) * 3 + 1) if row.get("monitor/teacher_cka") else ""
    with (run / "metrics.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    svg = _chart(build_report([run]), "monitor-feature-rank-copy")
    assert _curves(svg) == {"student": [(1.0, 1.0), (2.0, 4.0)]}
    assert [t.text for t in svg.iter(f"{SVG}text") if t.get("class") == "title"] == ["monitor feature_rank (copy)"]


@pytest.mark.parametrize("width", [1400, 390])
def test_no_chart_text_overlaps_or_is_cut_at_a_desktop_and_a_phone_width(two_runs, cohort_run, tmp_path, width):
    """The page is opened in a frame ``width`` px wide (a headless window is at least 500 px wide)."""
    for name, runs in (("one", [two_runs[0]]), ("all", [*two_runs, cohort_run])):
        page = build_report(runs, tmp_path / f"{name}.html")
        page.write_text(page.read_text().replace("</head>", LAYOUT_CHECK + "</head>", 1))
        frame = tmp_path / f"{name}-in-{width}.html"
        frame.write_text(
            f'<!DOCTYPE html><html><body style="margin:0"><iframe id="page" src="{page.name}" style="width:{width}px;height:2000px;border:0">'
            "</iframe><script>window.addEventListener('load', () => document.body.setAttribute('data-layout', "
            "document.getElementById('page').contentDocument.body.getAttribute('data-layout')));</script></body></html>"
        )
        layout = _body_attribute(frame, "data-layout", width + 100)
        assert layout["window"] == width and layout["charts"] >= 6
        assert layout["problems"] == [], layout["problems"]
        assert layout["page"] <= width, f"the page is {layout['page']} px wide in a {width} px window"
