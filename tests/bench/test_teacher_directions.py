"""benchmarks/teacher_directions.py: the teacher's principal directions, how much dCor² its first few carry, and
which of them a student's features predict."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import teacher_directions as td

from integration.common import tiny_config


def test_a_student_that_holds_one_teacher_direction_predicts_that_one_only():
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(3000, 4, generator=g) * torch.tensor([3.0, 2.0, 1.0, 0.5]) @ torch.linalg.qr(torch.randn(4, 4, generator=g))[0]
    mean, directions, share = td.principal_directions(teacher)
    assert share.tolist() == pytest.approx(sorted(share.tolist(), reverse=True)) and float(share.sum()) == pytest.approx(1.0)
    assert share[0].item() == pytest.approx(9 / 14.25, abs=0.05)  # variances 9, 4, 1, 0.25
    coordinates = (teacher - mean) @ directions.T
    student = torch.cat([coordinates[:, :1] * 5 + 1, torch.randn(3000, 3, generator=g)], 1)  # direction 1, rescaled, and noise
    r2 = td.ridge_r2(student[:2000], student[2000:], coordinates[:2000], coordinates[2000:])
    assert r2[0].item() > 0.99 and r2[1:].abs().max().item() < 0.05


def test_the_directions_of_a_tiny_run(tmp_path):
    from ssdistill import distill

    config = tiny_config(
        tmp_path, trainer={"epochs": 1, "progress_bar": False, "seed": 3}, eval={"teacher": False, "random_init": False, "align_images": 0}
    )
    config["method"] = {"name": "mvmr", "mode": "kd", "projector": [32, 32]}
    distill(config, quiet=True)
    run = tmp_path / "runs" / "tiny"
    out = tmp_path / "directions.json"
    assert td.main([f"{run}=tiny run", "--components", "3", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert len(result["teacher"]["variance_share"]) == 3 and [p["directions"] for p in result["teacher"]["prefixes"]] == [1, 2, 3, 5]
    assert result["teacher"]["prefixes"][-1]["dcor2_with_teacher"] == pytest.approx(1.0, abs=0.02)  # 5 of test_resnet's directions: nearly all of it
    assert set(result["models"]) == {"random_init", "tiny run"}
    assert td.main(["--table-only", "--out", str(out)]) == 0  # rendered from the record, nothing measured
    assert all(len(m["r2_per_direction"]) == 3 and 0 <= m["knn"] <= 100 and m["effective_rank"] >= 1 for m in result["models"].values())
    other = dict(config, data={**config["data"], "train_subset": 32}, run={**config["run"], "name": "other"})
    distill(other, quiet=True)
    with pytest.raises(SystemExit, match="another teacher or other data"):
        td.main([str(run), str(tmp_path / "runs" / "other")])


def test_effective_rank_counts_the_directions_the_features_use():
    g = torch.Generator().manual_seed(0)
    isotropic = torch.randn(4000, 8, generator=g)
    line = torch.randn(4000, 1, generator=g) * torch.ones(1, 8)
    assert td.effective_rank(isotropic)[0] == pytest.approx(8, abs=0.1) and td.effective_rank(isotropic)[1] < 0.15
    assert td.effective_rank(line)[0] == pytest.approx(1, abs=1e-3) and td.effective_rank(line)[1] == pytest.approx(1, abs=1e-6)
    # two equal directions and no others: exp(ln 2) = 2
    two = torch.cat([torch.randn(4000, 2, generator=g), torch.zeros(4000, 6)], 1)
    assert td.effective_rank(two)[0] == pytest.approx(2, abs=0.01)
