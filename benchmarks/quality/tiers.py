"""The tiers of the quality benchmarks: what each changes in every row's recipe, and the run a row makes on a tier.

A row's config on a tier is its recipe, then the tier's overrides, then the row's own (benchmarks/rows.yaml:
``overrides`` on every tier, ``tiers.<tier>`` on one)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.quality import rows
from benchmarks.quality.paths import REPO, SHARED_WEIGHTS
from benchmarks.quality.rows import SMOKE_BENCHES, TASK_BENCHES

# Smoke tier: the first 60 (train) and 50 (test) images of every CIFAR-10 class, 12 epochs, resnet18 at 32 px (at this
# budget it learns fastest of the cheap students; benchmarks/rows.yaml gives the figures its checks are set from)
SMOKE_IMAGES = {"train": 60, "test": 50}
SMOKE_EPOCHS = 12


def _smoke_overrides(bench: str, method: str) -> dict:
    from benchmarks.datasets import Q3_TASKS, cifar10_slice, task_folders

    data = cifar10_slice(SMOKE_IMAGES)
    if bench in TASK_BENCHES:
        recipe = _recipe(bench, method)
        tasks = task_folders(data, data.parent / f"{data.name}-tasks", Q3_TASKS)  # the tasks' folders over the slice
        overrides = {"data": {"train_subset": None, "batch_size": 64, "num_workers": 0}}
        if (recipe.get("method") or {}).get("tasks"):
            overrides["method"] = {"tasks": {name: {"data": str(tasks / name / "train"), "val": str(tasks / name / "test")} for name in Q3_TASKS}}
        else:  # a row trained on the union of the tasks' images (multi-teacher feature distillation), as on the cpu tier
            overrides["data"] = {"train": str(tasks / "union" / "train"), "val": str(tasks / "union" / "test"), **overrides["data"]}
        return {
            **overrides,
            # the teachers' weights as the recipe names them, from the shared weights folder
            "teachers": {name: {"weights": str(SHARED_WEIGHTS / Path(t["weights"]).name)} for name, t in (recipe.get("teachers") or {}).items()},
            "student": {"arch": "resnet18", "resolution": 32},
            "trainer": {"epochs": SMOKE_EPOCHS},
            "eval": {"suite": "knn", "random_init": True},
        }
    return {
        "data": {"train": str(data / "train"), "val": str(data / "test"), "train_subset": None, "batch_size": 64, "num_workers": 0},
        "student": {"arch": "resnet18", "resolution": 32},
        "teacher": {"weights": str(SHARED_WEIGHTS / "resnet56-4bfd9763.th")},  # the recipe's path is relative to the repository
        "trainer": {"epochs": SMOKE_EPOCHS},
        "eval": {"suite": "knn"},
    }


def _recipe(bench: str, method: str) -> dict:
    import yaml

    return yaml.safe_load(rows.recipe_path(bench, method).read_text()) or {}


def _cpu_overrides(bench: str, method: str) -> dict:
    return {"eval": {"suite": "full"}}


def _gpu_overrides(bench: str, method: str) -> dict:
    return {
        "student": {"arch": "resnet18", "resolution": 224, "channels_last": True},
        "data": {"batch_size": 256, "num_workers": 8},
        "trainer": {"epochs": 100, "precision": "bf16-mixed", "accelerator": "gpu"},
        "eval": {"suite": "full"},
    }


@dataclass(frozen=True)
class Tier:
    name: str
    benches: tuple[str, ...]
    overrides: Callable[[str, str], dict]  # (bench, row) -> the tier's overrides of that row's recipe
    description: str


TIERS = {
    "smoke": Tier(
        "smoke",
        SMOKE_BENCHES,
        _smoke_overrides,
        "Q2 and Q3C recipes on 600 CIFAR-10 images (60 per class; Q3C: classes 0-4 and 5-9 as two tasks), 12 epochs, resnet18 at 32 px; k-NN on 500 test images",
    ),
    "cpu": Tier("cpu", ("q1", "q2", "q3", "q3c"), _cpu_overrides, "the recipes as written, full evaluation"),
    "gpu": Tier("gpu", ("q1",), _gpu_overrides, "Q1 recipes with resnet18 at 224, batch 256, 100 epochs, bf16, teacher online"),
}


def row_overrides(tier: Tier, bench: str, method: str) -> dict:
    """The overrides of a row's recipe on a tier: the tier's, then the row's. A row that reuses another's recipe with
    inline overrides runs as ``<bench>-<row>`` unless its overrides name the run."""
    overrides = tier.overrides(bench, method)
    row = rows.catalogue().rows.get(method)
    if row is not None:
        rows.merge(overrides, row.tier_overrides(tier.name))
        if row.overrides and "name" not in (row.overrides.get("run") or {}):
            overrides.setdefault("run", {})["name"] = f"{bench}-{method}"
    return overrides


def run_dir_and_overrides(tier: Tier, bench: str, method: str, runs_dir: Path | None, seed: int | None = None) -> tuple[Path, dict]:
    """The run directory of a row on a tier (``<run.name>-<tier>``, the cpu tier's without a suffix; ``-seedN`` for
    another seed) and the overrides that train it there."""
    from ssdistill.recipe import build_config

    overrides = row_overrides(tier, bench, method)
    if seed is not None:  # another seed of the same row (benchmarks/spread.py)
        overrides.setdefault("trainer", {})["seed"] = seed
    recipe = build_config(rows.recipe_path(bench, method), overrides)
    name = (recipe.run.name if tier.name == "cpu" else f"{recipe.run.name}-{tier.name}") + ("" if seed is None else f"-seed{seed}")
    parent = Path(runs_dir) if runs_dir is not None else REPO / recipe.run.dir
    overrides["run"] = {"dir": str(parent), "name": name}
    overrides.setdefault("trainer", {})["progress_bar"] = False
    return parent / name, overrides
