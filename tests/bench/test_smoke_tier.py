"""docs/benchmarks.md smoke tier, in every test run (first half of the rows; the second is test_smoke_tier_b.py): each
method on 600 real CIFAR-10 images (no labels in training), 12 epochs with the real ResNet-56 teacher (Q3C: ResNet-56
and ResNet-44, each teaching its own five classes), must pass ``benchmarks.quality.smoke.check_row``: distillation rows lift
the student's k-NN above the random-init student's (same images, fixed seeds; margins per method) and lower their loss;
rows trained with labels lift every member's k-NN and classifier; CKA's task heads cluster each task better than the
random-init student's features."""

import pytest

from bench.smoke import GROUPS, check, run_group


@pytest.fixture(scope="module")
def smoke_rows(tmp_path_factory):
    return run_group("a", tmp_path_factory)


@pytest.mark.parametrize("bench, method", GROUPS["a"])
def test_smoke_row_learns(smoke_rows, bench, method):
    check(smoke_rows, bench, method)
