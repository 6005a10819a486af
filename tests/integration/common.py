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
        "eval": {"teacher": False, "random_init": False, "align_images": 0},  # the alignment monitor: test_monitors.py
        "run": {"dir": str(tmp_path / "runs"), "name": "tiny"},
    }
    for section, values in updates.items():
        config.setdefault(section, {}).update(values)
    return config


def cka_tasks(tmp_path: Path, heads: tuple[str, str] = ("kmeans", "classifier")) -> dict:
    """Config updates for CKA on the demo data split into two 5-class tasks (folders of symlinked class folders), each
    taught by its own tiny teacher (``a``, ``b``: the same local test_resnet weights under two names); task ``a`` with
    head ``heads[0]``, task ``b`` with ``heads[1]`` (a classifier head reads the teacher's classes 3, 1, 4, 5, 9)."""
    tiny_config(tmp_path)  # writes the teacher weights
    weights = str(tmp_path / "teacher.safetensors")
    classes = sorted(p.name for p in (DEMO_DATA / "train").iterdir() if p.is_dir())
    for split in ("train", "val"):
        for task, names in (("a", classes[:5]), ("b", classes[5:])):
            folder = tmp_path / "tasks" / task / split
            folder.mkdir(parents=True, exist_ok=True)
            for name in names:
                if not (folder / name).exists():
                    (folder / name).symlink_to(DEMO_DATA / split / name)

    def task(name: str, head: str) -> dict:
        root = tmp_path / "tasks" / name
        return {
            "data": str(root / "train"),
            "val": str(root / "val"),
            "teacher": name,
            "head": head,
            "classes": 5 if head == "kmeans" else [3, 1, 4, 5, 9],
        }

    teacher = {"name": "test_resnet", "weights": weights, "resolution": 32}
    return {
        "method": {"name": "cka", "tasks": {"a": task("a", heads[0]), "b": task("b", heads[1])}},
        "teachers": {"a": dict(teacher), "b": dict(teacher)},
        "data": {"train": "", "val": None},
    }


def assembled_run(cfg):
    """A run put together by the real run assembly (``runs.assemble``: provider, needs and their fulfilment,
    preparation) without a trainer; ``run.module.terms`` holds the loss terms of its last step."""
    from ssdistill.runs.assemble import assemble

    run = assemble(cfg)
    module = run.module
    module.log_loss = lambda loss, **terms: (setattr(module, "terms", terms), loss)[1]  # no Lightning trainer here
    return run


def assembled(cfg):
    """``assembled_run``'s (provider, preparation, module)."""
    run = assembled_run(cfg)
    return run.ctx, run.prepared, run.module
