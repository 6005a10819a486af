"""BENCHMARKS.md smoke tier, in every test run: each method on 600 real CIFAR-10 images (no labels in training),
20 epochs with the real ResNet-56 teacher, must pass ``benchmarks.quality.check_row``: distillation rows lift the
student's k-NN at least 3 points above the random-init student's (same images, fixed seeds) and lower their loss."""

import pytest

from benchmarks import quality
from benchmarks.datasets import CIFAR10_ARCHIVE


@pytest.fixture(scope="module")
def smoke_rows(tmp_path_factory):
    if not CIFAR10_ARCHIVE.is_file() or not (quality.SHARED_WEIGHTS / "resnet56-4bfd9763.th").is_file():
        pytest.skip("the smoke tier needs ../shared/data and ../shared/weights next to the repository")
    root = tmp_path_factory.mktemp("smoke")
    return quality.run_tier("smoke", results_dir=root / "results", runs_dir=root / "runs", log=lambda line: None)


@pytest.mark.parametrize("method", quality.bench_methods("q2"))
def test_smoke_row_learns(smoke_rows, method):
    record = smoke_rows[("q2", method)]
    assert quality.check_row(method, record) == [], record["knn"]
    if method not in quality.NO_TEACHER:
        assert record["teacher_in_training"] and record["knn"]["teacher"]["top1"] > 70.0
