"""docs/benchmarks.md smoke tier, second half of the rows (see test_smoke_tier.py)."""

import pytest

from bench.smoke import GROUPS, check, run_group


@pytest.fixture(scope="module")
def smoke_rows(tmp_path_factory):
    return run_group("b", tmp_path_factory)


@pytest.mark.parametrize("bench, method", GROUPS["b"])
def test_smoke_row_learns(smoke_rows, bench, method):
    check(smoke_rows, bench, method)
