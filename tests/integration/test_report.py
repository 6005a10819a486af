"""The HTML report of one and of several runs, looked at in a real headless browser (Debian's chromium)."""

import json
import os
import shutil
import subprocess

import pytest
from PIL import Image

from integration.common import tiny_config
from ssdistill import distill
from ssdistill.cli import main
from ssdistill.report.svg import PALETTE

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("report")
    runs = []
    for name, method in (("feat", {"name": "feature", "projector_hidden": [32]}), ("seedrun", {"name": "seed", "teacher_view": "original"})):
        config = tiny_config(tmp_path, method=method, run={"name": name},
                             eval={"teacher": True, "random_init": True, "suite": "full", "monitor_every": 1},
                             trainer={"epochs": 2, "log_every_n_steps": 1})
        if name == "seedrun":
            config["method"].pop("projector_hidden")
        distill(config, quiet=True)
        runs.append(tmp_path / "runs" / name)
    return runs


def _browser():
    if CHROMIUM is None:
        if os.environ.get("SSDISTILL_REQUIRE_BROWSER"):
            pytest.fail("chromium is required here (apt-get install chromium)")
        pytest.skip("no chromium on this machine (.ci/run installs it)")
    return [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=3000"]


def _rendered_charts(page):
    dom = subprocess.run([*_browser(), "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True).stdout
    marker = 'data-rendered="'
    assert marker in dom, "the page's load handler did not run"
    raw = dom.split(marker, 1)[1].split('"', 1)[0].replace("&quot;", '"')
    return json.loads(raw)


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
