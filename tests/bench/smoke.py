"""The smoke tier's rows, split into two test modules so that pytest-xdist (``--dist loadfile``) can run them on two
workers side by side; each module's rows run once, in a module-scoped fixture."""

import pytest

from benchmarks import quality
from benchmarks.datasets import CIFAR10_ARCHIVE

GROUPS = {  # (bench, row)
    "a": (("q2", "moco"), ("q2", "feature"), ("q2", "seed"), ("q2", "disco"), ("q3c", "cka")),
    "b": (("q2", "bingo"), ("q2", "mvmr_kd"), ("q2", "mvmr_ssl"), ("q2", "mcl_supervised")),
}
# rows of the smoke tier (``python -m benchmarks.quality --tier smoke``) that the tests leave out, and why
UNTESTED = {
    ("q2", "mcl"): "the label-free cohort, like MoCo-v2 alone, does not lift k-NN from 600 images in 20 epochs, so its row "
    "would only check finite losses (about 4 min): its step, gradients, queues and DDP are tested in tests/methods/test_mcl.py "
    "and tests/integration/test_ddp.py",
    ("q2", "mcl_independent"): "the baseline of mcl_supervised, the same code with the mutual terms weighted 0",
    **{("q3c", row): "a variant of the cka row (same code, other weights or heads), measured by the cpu tier"
       for row in ("cka_classifier", "cka_task_only", "cka_cfl", "cka_no_task", "cka_no_intra", "cka_no_inter", "cka_no_align")},
    ("q3c", "feature_multi"): "multi-teacher feature distillation is tested by the q2 feature row and tests/methods/test_feature_multi.py",
}


def run_group(group: str, tmp_path_factory) -> dict:
    if not CIFAR10_ARCHIVE.is_file() or not (quality.SHARED_WEIGHTS / "resnet56-4bfd9763.th").is_file():
        pytest.skip("the smoke tier needs ../shared/data and ../shared/weights next to the repository")
    root = tmp_path_factory.mktemp(f"smoke-{group}")
    rows = {}
    for bench, method in GROUPS[group]:
        rows.update(quality.run_tier("smoke", [bench], [method], results_dir=root / "results", runs_dir=root / "runs", log=lambda line: None))
    return rows


def check(rows: dict, bench: str, method: str) -> None:
    record = rows[(bench, method)]
    assert quality.check_row(method, record) == [], record["knn"]
    if method not in quality.NO_TEACHER:
        assert record["teacher_in_training"] and record["knn"]["teacher"]["top1"] > 70.0
