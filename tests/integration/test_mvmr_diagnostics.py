"""benchmarks/mvmr_diagnostics.py on a tiny MV-MR distillation run: the figures over training, and that measuring
them leaves the training as it is."""

from __future__ import annotations

import csv
import json

import lightning as L
import pytest
import torch
import yaml

from benchmarks import mvmr_diagnostics as diag

from integration.common import tiny_config


def mvmr_config(tmp_path, name: str) -> dict:
    config = tiny_config(tmp_path, trainer={"epochs": 2, "progress_bar": False, "seed": 3}, run={"dir": str(tmp_path / "runs"), "name": name})
    config["method"] = {"name": "mvmr", "mode": "kd", "projector": [32, 32]}
    return config


def test_the_diagnostics_over_a_run_and_the_run_they_leave_unchanged(tmp_path):
    path = tmp_path / "mvmr.yaml"
    path.write_text(yaml.safe_dump(mvmr_config(tmp_path, "diagnosed")))
    assert diag.main(["--config", str(path), "--val-images", "32"]) == 0
    run_dir = tmp_path / "runs" / "diagnosed"
    history = json.loads((run_dir / "diagnostics.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1, 2] and history[0]["step"] == 1  # the first measurement: once both kept batches were seen
    for h in history:
        assert set(h["grad_norm"]) == {"mse", "std", "views", "teacher", "total"}
        assert all(v >= 0 for v in h["grad_norm"].values()) and h["grad_norm"]["teacher"] > 0
        assert h["grad_norm_feature_regression"] > 0
        assert h["grad_ratio_to_feature_regression"]["teacher"] == pytest.approx(h["grad_norm"]["teacher"] / h["grad_norm_feature_regression"])
        assert all(-1 <= h[k] <= 1 for k in ("dcor2_projector_teacher_train", "dcor2_projector_teacher_val", "dcor2_backbone_teacher_val"))
        assert h["val_images"] == 32
    kept = torch.load(run_dir / "diagnostics_batches.pt", weights_only=False)  # what a resumed run measures on
    assert len(kept) == 2 and kept[0]["views"]["aug"].shape[0] == 16
    with pytest.raises(SystemExit, match="has finished: its diagnostics are in"):
        diag.main(["--config", str(path)])
    columns = next(csv.reader((run_dir / "metrics.csv").open()))
    assert {"diag/dcor2_train", "diag/dcor2_val", "diag/grad_teacher", "diag/grad_feature_regression"} <= set(columns)
    assert "| epoch | dCor² train |" in diag.table(history)

    # the same run without the diagnostics trains to the same weights: the extra passes moved nothing
    from ssdistill import distill

    distill(mvmr_config(tmp_path, "plain"), quiet=True)

    def weights(name):
        return torch.load(tmp_path / "runs" / name / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]

    diagnosed, plain = weights("diagnosed"), weights("plain")
    assert diagnosed.keys() == plain.keys() and all(torch.equal(diagnosed[k], plain[k]) for k in plain)


def test_only_mvmr_distillation_is_diagnosed(tmp_path):
    path = tmp_path / "feature.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path)))
    with pytest.raises(SystemExit, match="diagnoses MV-MR in distillation mode"):
        diag.main(["--config", str(path)])


class KillInSecondEpoch(L.Callback):
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 1:
            raise RuntimeError("simulated kill")


def test_a_killed_diagnosed_run_resumes_with_the_history_of_an_uninterrupted_one(tmp_path, monkeypatch):
    """Killed in its second epoch, the run resumes from its epoch checkpoint: it measures on the two batches it kept at
    its start, each epoch once in diagnostics.json, with the figures of the same run diagnosed without a break."""
    import ssdistill

    for name in ("whole", "killed"):
        config = mvmr_config(tmp_path, name)
        config["trainer"]["epochs"] = 3
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
    assert diag.main(["--config", str(tmp_path / "whole.yaml"), "--val-images", "32"]) == 0
    plain = ssdistill.distill
    monkeypatch.setattr(ssdistill, "distill", lambda *a, callbacks=(), **k: plain(*a, callbacks=[*callbacks, KillInSecondEpoch()], **k))
    with pytest.raises(RuntimeError, match="simulated kill"):
        diag.main(["--config", str(tmp_path / "killed.yaml"), "--val-images", "32"])
    killed = tmp_path / "runs" / "killed"
    assert [h["epoch"] for h in json.loads((killed / "diagnostics.json").read_text())] == [0, 1]
    monkeypatch.setattr(ssdistill, "distill", plain)
    assert diag.main(["--config", str(tmp_path / "killed.yaml"), "--val-images", "32"]) == 0
    resumed = json.loads((killed / "diagnostics.json").read_text())
    whole = json.loads((tmp_path / "runs" / "whole" / "diagnostics.json").read_text())
    assert [h["epoch"] for h in resumed] == [0, 1, 2, 3] and [h["step"] for h in resumed] == [h["step"] for h in whole]
    for got, want in zip(resumed, whole):
        for key in ("dcor2_projector_teacher_train", "dcor2_projector_teacher_val", "dcor2_backbone_teacher_val", "grad_norm_feature_regression"):
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), (got["epoch"], key)
        assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-4, abs=1e-6)
