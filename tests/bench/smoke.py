"""The smoke tier's rows, split into two test modules so that pytest-xdist (``--dist loadfile``) can run them on two
workers side by side; each module's rows run once, in a module-scoped fixture."""

import pytest

from benchmarks import quality
from benchmarks.datasets import CIFAR10_ARCHIVE

GROUPS, UNTESTED = quality.SMOKE_TESTS, quality.SMOKE_UNTESTED


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
    if method not in quality.NO_TEACHER:  # every teacher (CKA's are named: teacher_<name>) is a real one
        teachers = [row["top1"] for label, row in record["knn"].items() if label == "teacher" or label.startswith("teacher_")]
        assert record["teacher_in_training"] and teachers and min(teachers) > 70.0
