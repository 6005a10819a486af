"""MoCo-v2, SEED and DisCo end to end on a tiny teacher and student (real images, a few steps)."""

import pytest
import torch

from ssdistill import distill
from ssdistill.api import load_student_from_run

from integration.common import tiny_config


@pytest.mark.parametrize(
    "method",
    [
        {"name": "moco", "out_dim": 16, "momentum": 0.99, "mask_same_id": True},
        {"name": "seed", "teacher_view": "same"},
        {"name": "seed", "teacher_view": "bank", "bank_repeats": 2},
        {"name": "disco", "teacher_view": "same", "head_hidden": [32]},
        {"name": "disco", "teacher_view": "original", "head_hidden": [32]},
        {"name": "bingo", "bag_size": 3, "head_hidden": [32], "warm_epochs": 1},
        {"name": "bingo", "bag_size": 3, "head_hidden": [32], "teacher_keys": "bank", "bank_repeats": 2, "loss_form": "paper"},
    ],
    ids=["moco", "seed-online", "seed-bank", "disco-online", "disco-cached", "bingo-online", "bingo-bank"],
)
def test_contrastive_methods_run_and_checkpoint_their_queue(tmp_path, method):
    config = tiny_config(tmp_path, method={**method})
    config["method"].pop("projector_hidden")
    results = distill(config, quiet=True)
    assert results["steps"] == 12 and results["teacher_in_training"] == (method["name"] != "moco")
    checkpoint = torch.load(tmp_path / "runs" / "tiny" / "checkpoints" / "last.ckpt", weights_only=False)
    state = checkpoint["state_dict"]
    assert int(state["queue.pointer"]) == (12 * 16) % 64  # 12 steps of 16 keys into a queue capped at 64 images
    assert not any(k.startswith("teacher") for k in state)
    _, student = load_student_from_run(tmp_path / "runs" / "tiny")
    assert student.dim > 0
    recorded = results["deviations"]  # every departure from the official code is in the run record
    assert ("mask_same_id: True (official: False)" in recorded) == bool(method.get("mask_same_id"))
    assert ("teacher_view: bank (official: same)" in recorded) == (method.get("teacher_view") == "bank")
