"""MV-MR end to end: several teachers as representations; only multi-teacher methods accept them (its learning on real
images: test_real_images.py, test_real_images_ssl.py)."""

import csv

import pytest
import timm
from safetensors.torch import save_file

from ssdistill import distill
from ssdistill.errors import ConfigError

from integration.common import tiny_config


def _second_teacher(tmp_path):
    path = tmp_path / "teacher2.safetensors"
    model = timm.create_model("test_efficientnet", pretrained=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return {"name": "test_efficientnet", "weights": str(path), "resolution": 32}


def test_mvmr_with_two_teachers_logs_one_term_per_teacher(tmp_path):
    config = tiny_config(
        tmp_path, method={"name": "mvmr", "mode": "kd", "projector": [32, 16], "weights": {"teacher_t2": 0.5}}, eval={"teacher": True}
    )
    config["method"].pop("projector_hidden")
    config["teachers"] = {"t2": _second_teacher(tmp_path)}
    results = distill(config, quiet=True)
    assert list(results["teachers"]) == ["teacher", "t2"] and results["teacher_in_training"]
    assert results["teachers"]["t2"]["name"] == "test_efficientnet" and len(results["teachers"]["t2"]["fingerprint"]) == 16
    assert results["signals"]["teacher_t2"] == {**results["signals"]["teacher_t2"], "teacher": "t2", "view": "original", "from": "cache"}
    # every teacher is evaluated with the same protocol as the student, in its own row
    assert set(results["knn"]) == {"teacher", "teacher_t2", "student"}
    rows = list(csv.DictReader((tmp_path / "runs" / "tiny" / "metrics.csv").open()))
    logged = [float(r["train/teacher_t2_step"]) for r in rows if r.get("train/teacher_t2_step")]
    assert logged and all(0.0 <= v <= 2.0 for v in logged)


def test_single_teacher_methods_refuse_a_teacher_they_would_not_read(tmp_path):
    config = tiny_config(tmp_path)
    config["method"] = {"name": "seed", "teacher_view": "original"}
    config["teachers"] = {"t2": _second_teacher(tmp_path)}
    with pytest.raises(ConfigError, match="method 'seed' reads teacher teacher only; remove t2 from teachers"):
        distill(config, quiet=True)
