"""BENCHMARKS.md smoke tier, in every test run (first half of the rows; the second is test_smoke_tier_b.py): each
method on 600 real CIFAR-10 images (no labels in training), 20 epochs with the real ResNet-56 teacher, must pass
``benchmarks.quality.check_row``: distillation rows lift the student's k-NN at least 3 points above the random-init
student's (same images, fixed seeds) and lower their loss; rows trained with labels lift every member's k-NN and
classifier."""

import pytest

from benchmarks import quality
from bench.smoke import GROUPS, UNTESTED, check, run_group


@pytest.fixture(scope="module")
def smoke_rows(tmp_path_factory):
    return run_group("a", tmp_path_factory)


@pytest.mark.parametrize("method", GROUPS["a"])
def test_smoke_row_learns(smoke_rows, method):
    check(smoke_rows, method)


def test_every_smoke_row_is_tested_or_its_omission_explained():
    grouped = [method for rows in GROUPS.values() for method in rows]
    assert sorted(grouped + list(UNTESTED)) == sorted(quality.bench_methods("q2")) and len(set(grouped)) == len(grouped)
