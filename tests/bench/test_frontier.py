"""The frontier benchmark (benchmarks/frontier.py) on records made by hand: the plan's arithmetic, the table, the
front, the plot and the page; tests/bench/test_frontier_smoke.py measures a row end to end."""

from __future__ import annotations

import json

import pytest

from benchmarks import frontier


def record(arch: str, side: int, k20: float, ratio1: float, ratio32: float, teacher: float = 80.0) -> dict:
    return {
        "teacher": {"name": "efficientnet_lite0"},
        "knn": {"student": {"top1": k20}, "teacher": {"top1": teacher}, "student_ema": {"top1": k20 - 1}},
        "evaluation": {"models": {"student": {"params_m": 1.5, "gflops": 0.04, "linear": {"top1": k20 + 2}}}},
        "timing": {"train_seconds": 1200.0},
        "latency": {
            "ratio": {"1": ratio1, "32": ratio32},
            "ms": {"1": {"teacher": 10.0, "student": 10 * ratio1}, "32": {"teacher": 200.0}},
            "rounds": 7,
            "threads": 2,
            "machine": {"cpu_model": "Test CPU"},
        },
        "frontier": {"row": f"{arch}-{side}", "arch": arch, "side": side},
    }


@pytest.fixture
def results(tmp_path):
    folder = tmp_path / "frontier"
    (folder / "q1").mkdir(parents=True)
    rows = [
        record("mobilenetv3_small_100", 128, 70.0, 0.10, 0.05),
        record("mobilenetv3_small_050", 128, 60.0, 0.05, 0.03),
        record("mobilenetv3_large_100", 128, 68.0, 0.30, 0.25),  # slower and worse than mobilenetv3_small_100: off the front
        record("resnet18", 128, 75.0, 0.80, 0.70),
    ]
    for r in rows:
        (folder / "q1" / f"{r['frontier']['row']}-cpu.json").write_text(json.dumps(r))
    return folder


def test_the_table_marks_the_front_and_gives_the_ratios(results):
    markdown = frontier.table("q1", "cpu", results)
    lines = {
        line.split("|")[1].strip() + " " + line.split("|")[2].strip(): line
        for line in markdown.splitlines()
        if line.startswith("| ") and "---" not in line
    }
    assert lines["mobilenetv3_small_100 128"].rstrip().endswith("| yes |")
    assert lines["mobilenetv3_large_100 128"].rstrip().endswith("|  |")
    assert "| 87.5 |" in lines["mobilenetv3_small_100 128"]  # 70 / 80 of the teacher
    assert "| 0.10 | 0.050 |" in lines["mobilenetv3_small_100 128"]
    assert "10.0-10.0 ms at batch 1" in markdown and "Test CPU" in markdown
    # the rows come in the order benchmarks/frontier.yaml lists them
    order = [line.split("|")[1].strip() for line in markdown.splitlines()[2:6]]
    assert order == ["mobilenetv3_small_050", "mobilenetv3_small_100", "mobilenetv3_large_100", "resnet18"]


def test_the_plot_fills_the_front_and_uses_a_log_axis(results):
    svg = frontier.chart("q1", "cpu", results)
    assert svg.count('class="point"') == 4
    assert svg.count('data-front="true"') == 3 and 'data-name="mobilenetv3_large_100 128 px" data-x="0.3" data-y="68.0" data-front="false"' in svg
    assert ">0.1</text>" in svg and ">0.5</text>" in svg  # ticks at 1-2-5 steps of a log axis
    assert 'class="front"' in svg


def test_outputs_go_to_the_page_the_svg_and_the_docs_block(results, tmp_path):
    docs = tmp_path / "docs" / "benchmarks.md"
    docs.parent.mkdir()
    docs.write_text("# B\n<!-- rows:frontier-q1 -->\nOLD-BLOCK\n<!-- /rows:frontier-q1 -->\nend\n")
    markdown = frontier.write_outputs("q1", "cpu", results, docs)
    assert markdown in docs.read_text() and "OLD-BLOCK" not in docs.read_text()
    assert "<svg" in docs.read_text() and "<div class='frontier-chart'>" in docs.read_text()  # the plot inline, regenerated with the table
    page = (results / "q1-cpu.html").read_text()
    assert "<svg" in page and "<td>mobilenetv3_small_050</td>" in page and "interleaved rounds" in page
    assert frontier.write_outputs("q2", "cpu", results, None) is None  # nothing on record


def test_the_plan_adds_the_recipe_rows_overhead_to_each_students_measured_step(monkeypatch):
    steps = {("mobilenetv3_small_100", 128): 0.004, ("mobilenetv3_small_100", 96): 0.002, ("resnet18", 128): 0.010}
    monkeypatch.setattr(frontier, "train_images", lambda cfg: 1000)
    monkeypatch.setattr(
        frontier, "student_cost", lambda arch, side, *_, **__: {"params_m": 1.0, "gflops": 0.5, "step_s_per_image": steps[(arch, side)]}
    )
    spec = frontier.Bench(
        "q1", frontier.REPO / "configs/recommended/q1.yaml", 20, 1.0, (frontier.Row("mobilenetv3_small_100", 96), frontier.Row("resnet18", 128)), None
    )
    recipe_row = {
        "student": {"arch": "mobilenetv3_small_100", "resolution": 128},
        "timing": {"train_seconds": 600.0},
        "epochs": 60,
        "data": {"train_size": 1000},
    }
    p = frontier.plan(spec, calibrate=recipe_row)
    overhead = 600.0 / (60 * 1000) - 0.004  # 6 ms per image, of which 4 ms is the student's step
    assert [r["hours"] for r in p["rows"]] == pytest.approx([20 * 1000 * (s + overhead) / 3600 for s in (0.002, 0.010)])
    assert p["rows"][1]["gflops_total"] == pytest.approx(0.5 * 3 * 1000 * 20)
    assert p["hours"] == pytest.approx(sum(r["hours"] for r in p["rows"]))


def test_bad_requests_are_refused_in_one_line():
    with pytest.raises(SystemExit, match="no frontier for q9"):
        frontier.load_spec("q9")
    with pytest.raises(SystemExit, match="--bench q2"):
        frontier.load_spec("q1", "smoke")
    with pytest.raises(SystemExit, match="unknown frontier row"):
        frontier.main(["--bench", "q1", "--only", "nothing-1"])


def test_the_plan_counts_the_recipe_rows_batches_not_its_monitor_and_adds_its_evaluation(monkeypatch):
    monkeypatch.setattr(frontier, "train_images", lambda cfg: 1000)
    monkeypatch.setattr(frontier, "student_cost", lambda arch, side, *_, **__: {"params_m": 1.0, "gflops": 0.5, "step_s_per_image": 0.004})
    spec = frontier.Bench("q1", frontier.REPO / "configs/recommended/q1.yaml", 20, 1.0, (frontier.Row("mobilenetv3_small_100", 128),), None)
    timing = {"train_seconds": 900.0, "epoch_train_seconds": [10.0] * 60, "eval_seconds": 180.0}  # 300 s of it was the monitor
    recipe_row = {"student": {"arch": "mobilenetv3_small_100", "resolution": 128}, "timing": timing, "epochs": 60, "data": {"train_size": 1000}}
    (row,) = frontier.plan(spec, calibrate=recipe_row)["rows"]
    assert row["hours"] == pytest.approx((20 * 1000 * (600.0 / 60000) + 180.0) / 3600)


def test_the_gpu_tier_is_every_q1_student_at_224_px_in_bf16(tmp_path):
    from ssdistill.recipe import build_config

    spec = frontier.load_spec("q1", "gpu")
    assert {r.side for r in spec.rows} == {224} and spec.epochs == 100
    assert len(spec.rows) == len({r.arch for r in frontier.load_spec("q1").rows})  # one row per student
    cfg = build_config(spec.recipe, frontier.overrides(spec, spec.rows[0], "gpu", tmp_path))
    assert (cfg.trainer.precision, cfg.trainer.accelerator, cfg.data.batch_size, cfg.student.channels_last) == ("bf16-mixed", "gpu", 256, True)
    assert cfg.run.name.endswith("-224-gpu")
    with pytest.raises(SystemExit, match="--bench q1"):
        frontier.load_spec("q2", "gpu")
