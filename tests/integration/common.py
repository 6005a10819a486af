"""Small fast configs for integration tests: a tiny timm teacher from a local file, a tiny student."""

from pathlib import Path

import timm
from safetensors.torch import save_file

from conftest import DEMO_DATA


def tiny_config(tmp_path: Path, **updates) -> dict:
    weights = tmp_path / "teacher.safetensors"
    if not weights.exists():
        teacher = timm.create_model("test_resnet", pretrained=False)
        save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(weights))
    config = {
        "method": {"name": "feature", "projector_hidden": [32]},
        "data": {
            "train": str(DEMO_DATA / "train"),
            "val": str(DEMO_DATA / "val"),
            "train_subset": 64,
            "batch_size": 16,
            "eval_batch_size": 64,
            "num_workers": 0,
        },
        "student": {"arch": "test_resnet", "resolution": 32},
        "teacher": {"name": "test_resnet", "weights": str(weights), "resolution": 32},
        "trainer": {"epochs": 3, "progress_bar": False, "seed": 3},
        "eval": {"teacher": False, "random_init": False},
        "run": {"dir": str(tmp_path / "runs"), "name": "tiny"},
    }
    for section, values in updates.items():
        config.setdefault(section, {}).update(values)
    return config
