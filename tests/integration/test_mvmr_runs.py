"""MV-MR end to end: several teachers as representations; only multi-teacher methods accept them."""

import csv

import pytest
import timm
from safetensors.torch import save_file

from integration.common import tiny_config
from ssdistill import distill
from ssdistill.errors import ConfigError


def _second_teacher(tmp_path):
    path = tmp_path / "teacher2.safetensors"
    model = timm.create_model("test_efficientnet", pretrained=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return {"name": "test_efficientnet", "weights": str(path), "resolution": 32}


def test_mvmr_with_two_teachers_logs_one_term_per_teacher(tmp_path):
    config = tiny_config(tmp_path, method={"name": "mvmr", "mode": "kd", "projector": [32, 16], "weights": {"teacher2": 0.5}})
    config["method"].pop("projector_hidden")
    config["teachers"] = [_second_teacher(tmp_path)]
    results = distill(config, quiet=True)
    assert results["extra_teachers"][0]["name"] == "test_efficientnet" and results["teacher_in_training"]
    rows = list(csv.DictReader((tmp_path / "runs" / "tiny" / "metrics.csv").open()))
    logged = [float(r["train/teacher2_step"]) for r in rows if r.get("train/teacher2_step")]
    assert logged and all(0.0 <= v <= 2.0 for v in logged)


def test_single_teacher_methods_refuse_a_teachers_list(tmp_path):
    config = tiny_config(tmp_path)
    config["teachers"] = [_second_teacher(tmp_path)]
    with pytest.raises(ConfigError, match="remove the 'teachers' list"):
        distill(config, quiet=True)
