"""The MV-MR study (benchmarks/mvmr_study.py): each row's config changes only what its name says, and the table."""

from __future__ import annotations

import json

from benchmarks import mvmr_study as study
from ssdistill.recipe import build_config


def test_each_row_is_the_q2_recipe_with_one_change(tmp_path):
    cfgs = {row: build_config(*study.row_config(row, tmp_path)) for row in study.ROWS}
    base = build_config(study.MVMR)
    for row, cfg in cfgs.items():
        assert cfg.trainer.epochs == study.ROWS[row][3] and cfg.run.name == f"mvmr-study-{row}"
        assert cfg.data.train_subset == 10000 and cfg.student.resolution == 32
    official = cfgs["mvmr_kd_official_e30"].method
    assert official.deviations() == [] and official.projector == [8192, 8192, 8192] and official.dcor_estimator == "biased"
    assert cfgs["mvmr_kd_e100"].method == base.method
    assert cfgs["mvmr_kd_teacher16_e30"].method.weights == {"teacher": 16.0}
    assert cfgs["mvmr_kd_teacheronly_e30"].method.weights == {"mse": 0.0, "std": 0.0, "views": 0.0}
    assert cfgs["mvmr_kd_backbone_e30"].method.teacher_on == "backbone" and cfgs["mvmr_kd_backbone_e30"].method.weights == {}
    assert cfgs["mvmr_kd_backbone_teacher16_e30"].method.weights == {"teacher": 16.0}
    big = cfgs["mvmr_kd_batch512_e120"]
    assert (big.data.batch_size, big.optim.lr, big.trainer.epochs, big.optim.warmup_epochs) == (512, base.optim.lr, 120, 4)
    assert big.trainer.accumulate_grad_batches == 1  # a real batch of 512, not accumulated
    assert cfgs["feature_e300"].method.name == "feature"
    # the 30-epoch rows of ours and of feature regression are the Q2 table's, read from there
    assert study.record_path(study.STUDY, "mvmr_kd_e30").parent.name == "q2"
    assert study.record_path(tmp_path, "mvmr_kd_e30") == tmp_path / "mvmr_kd_e30-cpu.json"


def test_the_table_puts_each_method_on_its_curve_and_the_levers_below(tmp_path):
    def record(k20, seconds):
        return {
            "knn": {"student": {"top1": k20}, "teacher": {"top1": 85.0}, "random_init": {"top1": 22.0}},
            "evaluation": {"models": {"student": {"teacher_alignment": {"linear_cka": 0.3, "dcor2": 0.3}}}},
            "timing": {"train_seconds": seconds},
        }

    for row, k20 in {"mvmr_kd_e30": 27.0, "mvmr_kd_e100": 31.0, "feature_e30": 45.0, "mvmr_kd_teacher4_e30": 29.0}.items():
        (tmp_path / f"{row}-cpu.json").write_text(json.dumps(record(k20, 1200.0)))
    markdown = study.table(tmp_path)
    assert "| MV-MR-KD, ours | 27.0 / – / 0.30 (20 min) | 31.0 / – / 0.30 (20 min) | – |" in markdown
    assert "| feature regression | 45.0 / – / 0.30 (20 min) | – | – |" in markdown
    assert "| MV-MR-KD, ours, teacher term x4 | 29.0 / – / 0.30 | 20 min |" in markdown
    assert "k-NN 85.0; random init 22.0" in markdown
    assert study.table(tmp_path / "empty") is None
