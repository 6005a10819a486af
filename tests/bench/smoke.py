"""The smoke tier's rows, split into two test modules so that pytest-xdist (``--dist loadfile``) can run them on two
workers side by side; each module's rows run once, in a module-scoped fixture. The groups, the rows left out and the
check are benchmarks.quality.smoke's (from benchmarks/rows.yaml)."""

import pytest

from benchmarks.datasets import CIFAR10_ARCHIVE
from benchmarks.quality import smoke

GROUPS, UNTESTED = smoke.smoke_tests(), smoke.smoke_untested()


def run_group(group: str, tmp_path_factory) -> dict:
    if not CIFAR10_ARCHIVE.is_file() or not (smoke.SHARED_WEIGHTS / "resnet56-4bfd9763.th").is_file():
        pytest.skip("the smoke tier needs ../shared/data and ../shared/weights next to the repository")
    return smoke.run_rows(GROUPS[group], tmp_path_factory.mktemp(f"smoke-{group}"))


def check(rows: dict, bench: str, method: str) -> None:
    record = rows[(bench, method)]
    assert smoke.check_row(method, record) == [], record["knn"]
    assert record["teacher_in_training"] == smoke.has_teacher(method)  # the run trained as its method declares
    if smoke.has_teacher(method):  # every teacher (CKA's are named: teacher_<name>) is a real one
        teachers = [row["top1"] for label, row in record["knn"].items() if label == "teacher" or label.startswith("teacher_")]
        assert teachers and min(teachers) > 70.0
