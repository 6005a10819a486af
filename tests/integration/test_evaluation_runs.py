"""The full evaluation on a finished run: side by side, every metric, monitoring during training, features kept."""

import csv
import json

from ssdistill import distill, evaluate
from ssdistill.cli import main

from integration.common import tiny_config


def test_full_suite_after_training_and_knn_monitoring_during_it(tmp_path):
    config = tiny_config(tmp_path, eval={"teacher": True, "random_init": True, "suite": "full", "monitor_every": 2}, trainer={"epochs": 3})
    results = distill(config, quiet=True)
    evaluation = results["evaluation"]
    assert set(evaluation["models"]) == {"teacher", "random_init", "student"}
    for row in evaluation["models"].values():
        assert set(row["knn"]) == {"k20_t0.07", "k200_t0.1"}
        assert {"linear", "few_shot", "clustering", "embedding", "params_m", "gflops", "images_per_s"} <= set(row)
        assert set(row["few_shot"]) == {"0.01", "0.1"} and row["gflops"] > 0
        assert len(row["embedding"]["x"]) == 500 and 0 <= row["clustering"]["accuracy"] <= 100
    assert evaluation["models"]["student"]["knn"]["k20_t0.07"]["top1"] == results["knn"]["student"]["top1"]
    for label in ("student", "random_init"):  # label-free alignment with the teacher's val features; none for the teacher
        alignment = evaluation["models"][label]["teacher_alignment"]
        assert -0.1 <= alignment["dcor2"] <= 1 and 0 <= alignment["linear_cka"] <= 1 and alignment["samples"] > 4
    assert "teacher_alignment" not in evaluation["models"]["teacher"]
    kept = evaluation["retained_pct"]["linear"]
    linear = {k: evaluation["models"][k]["linear"]["top1"] for k in ("student", "teacher")}
    assert abs(kept - 100 * linear["student"] / linear["teacher"]) < 1e-6
    rows = list(csv.DictReader((tmp_path / "runs" / "tiny" / "metrics.csv").open()))
    monitored = [r for r in rows if r.get("monitor/knn_top1")]
    assert [int(r["epoch"]) for r in monitored] == [1, 2]  # every 2 epochs, and after the last one
    features = sorted(p.name for p in (tmp_path / "runs" / "tiny" / "features").iterdir())
    assert len(features) == 4 and all(p.startswith(("random_init-", "student-")) for p in features)  # teacher: from its cache


def test_eval_command_on_a_finished_run_writes_evaluation_json(tmp_path, capsys):
    run = tmp_path / "runs" / "tiny"
    distill(tiny_config(tmp_path, eval={"teacher": True, "random_init": True}, trainer={"epochs": 1}), quiet=True)
    main(["eval", str(run), "--num-workers", "0"])
    printed = capsys.readouterr().out
    assert "k-NN k20 t0.07" in printed and "linear" in printed and "% of teacher retained" in printed
    record = json.loads((run / "evaluation.json").read_text())
    assert record["evaluation"]["models"]["student"]["linear"]["selected_on"] == "20% of train"
    stamp = {p.name: p.stat().st_mtime_ns for p in (run / "features").iterdir()}
    again = evaluate(run, num_workers=0)  # features are read back, not extracted again
    assert {p.name: p.stat().st_mtime_ns for p in (run / "features").iterdir()} == stamp
    assert again["evaluation"]["models"]["student"]["linear"] == record["evaluation"]["models"]["student"]["linear"]
    assert evaluate(run, num_workers=0, full=False)["evaluation"] is None
