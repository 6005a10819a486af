"""The two test tiers (the rule is in tests/conftest.py): `make test` runs every test, `make test-fast` runs
`pytest -m "not slow"`. The fast tier must stay large, cover every part of the package, and hold none of the slow
tests: no end-to-end run under tests/integration/, no smoke tier, no DDP process group, none of SLOW_TESTS."""

import re
import subprocess
import sys

import pytest

import conftest
from conftest import REPO, SLOW_TESTS, is_slow

# every part of the package has unit tests in the fast tier: a folder of tests or one test file
PARTS = (
    "tests/losses/",
    "tests/data/",
    "tests/models/",
    "tests/methods/",
    "tests/eval/",
    "tests/cache/",
    "tests/report/",
    "tests/engine/",
    "tests/bench/",
    "tests/test_config.py",
    "tests/test_layering.py",
    "tests/test_labels.py",
    "tests/test_docs.py",
)
# what a test file that starts a process group (DDP) says
DDP_SIGNS = re.compile(r"init_process_group|ddp_worker|[\"']devices[\"']\s*:\s*[2-9]")


@pytest.fixture(scope="module")
def fast_tier() -> tuple[list[str], int]:
    """The node ids `pytest -m "not slow"` collects (in a second pytest process, as `make test-fast` would), and how
    many tests there are in all."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", "not slow", "tests"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ids = [line.strip() for line in done.stdout.splitlines() if "::" in line]
    summary = re.search(r"(\d+)/(\d+) tests collected \((\d+) deselected\)", done.stdout)
    assert summary, done.stdout[-500:]
    assert int(summary[1]) == len(ids)
    return ids, int(summary[2])


def test_the_fast_tier_is_large_and_covers_every_part(fast_tier):
    ids, total = fast_tier
    assert len(ids) >= 400, f"the fast tier has only {len(ids)} tests"
    assert total - len(ids) >= 150, f"only {total - len(ids)} of {total} tests are slow: is the marker applied?"
    for part in PARTS:
        assert sum(nodeid.startswith(part) for nodeid in ids) >= 1, f"the fast tier has no test of {part}"
    assert sum(nodeid.startswith("tests/methods/") for nodeid in ids) >= 80  # every method's one-step tests


def test_the_fast_tier_holds_no_slow_test(fast_tier):
    ids, _ = fast_tier
    files = sorted({nodeid.split("::")[0] for nodeid in ids})
    assert not [f for f in files if f.startswith("tests/integration/")]
    assert not [f for f in files if re.search(r"smoke|ddp", f.rsplit("/", 1)[-1])]
    ddp = [f for f in files if f != "tests/test_tiers.py" and DDP_SIGNS.search((REPO / f).read_text())]  # not the signs here
    assert not ddp, f"{ddp} start a process group (DDP): name the file *ddp* or move it to tests/integration/"
    assert not [nodeid for nodeid in ids if nodeid in SLOW_TESTS or nodeid.split("[")[0] in SLOW_TESTS or nodeid.split("::")[0] in SLOW_TESTS]
    assert "tests/test_tiers.py::test_the_fast_tier_holds_no_slow_test" in ids  # this check runs in the fast tier too


def test_every_slow_entry_names_a_test_that_exists():
    """An entry whose file or test was renamed would silently stop marking anything."""
    for entry in SLOW_TESTS:
        path, _, name = entry.partition("::")
        assert (REPO / path).is_file(), f"SLOW_TESTS names {path}, which does not exist"
        if name:
            assert re.search(rf"^def {re.escape(name)}\(", (REPO / path).read_text(), re.M), f"{entry} does not exist"
    for folder in conftest.SLOW_FOLDERS:
        assert (REPO / folder).is_dir()


def test_the_rule_sorts_hand_picked_tests():
    assert is_slow("tests/integration/test_distill.py::test_anything")
    assert is_slow("tests/bench/test_smoke_tier_b.py::test_smoke_row_learns[q2-bingo]")
    assert is_slow("tests/losses/test_queue_ddp.py::test_keys")
    assert is_slow("tests/cache/test_cached_distill.py::test_second_run_reuses_the_entry")  # a whole file listed
    assert is_slow("tests/test_docs.py::test_documented_command_runs[README.md#1]")  # parameters do not matter
    assert not is_slow("tests/test_docs.py::test_every_runnable_block_is_found")
    assert not is_slow("tests/bench/test_quality_harness.py::test_unknown_recipe_is_a_clear_error")
    assert not is_slow("tests/data/test_epoch_seeding.py::test_ddp_processes_get_disjoint_images")  # a name, not a file
    assert not is_slow("tests/methods/test_mcl.py::test_supervised_step_adds_cross_entropy_and_every_member_logit_kd")


def test_each_make_target_runs_its_tier_and_fails_on_an_empty_selection():
    """`make test` is the whole suite (what CI runs), `make test-fast` the fast tier; neither hides pytest's exit code
    (5 when nothing is collected), so an empty tier fails the target."""
    makefile = (REPO / "Makefile").read_text()
    recipes = {}
    for target in ("test", "test-fast"):
        found = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", makefile, re.M)
        assert found, f"the Makefile has no {target} target"
        recipes[target] = found[1]
    assert "pytest" in recipes["test"] and "slow" not in recipes["test"] and recipes["test"].rstrip().endswith("tests")
    assert '-m "not slow"' in recipes["test-fast"] and recipes["test-fast"].rstrip().endswith("tests")
    for recipe in recipes.values():
        assert "||" not in recipe and not re.search(r"^\t[-@]*-", recipe, re.M), "the target would hide a failing exit"
