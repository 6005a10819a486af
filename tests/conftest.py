import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEMO_DATA = REPO / "data" / "imagenette_mini"
SHARED = REPO.parent / "shared"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no model hub here: fail fast instead of waiting on the network

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one worker per core: one torch thread each, no oversubscription
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # and in the processes the tests start (CLI runs, DDP ranks)


# The longest test files first, in an order that keeps them apart. `make test` runs two pytest-xdist workers
# (--dist loadfile --no-loadscope-reorder): files go out in collection order, one to each worker at the start, and a
# worker is handed the next file whenever two or fewer of its tests are left to run. So the first worker takes the
# real-image file (2 tests, about 14 min of one CPU: the longest) and, at once, the DDP file (4 tests) behind it;
# the second worker takes the smoke tier's first half (one fixture of about 7 min) and, when that is done, its second
# half (about 6.5 min); the short files fill in behind on whichever worker frees up. (Before, the real-image file went
# to the worker that had the second smoke half and the run ended waiting on it.)
LONGEST_FIRST = (
    "tests/integration/test_real_images.py",
    "tests/bench/test_smoke_tier.py",
    "tests/integration/test_ddp.py",
    "tests/bench/test_smoke_tier_b.py",
    "tests/integration/test_real_images_ssl.py",
)


# The test tiers. `make test` runs every test (CI runs it); `make test-fast` runs `pytest -m "not slow"`: the tests that
# check the parts one at a time (losses, config, data, models, a method's step, evaluation, cache, report, layering,
# labels) in under 3 minutes on 2 cores. A test is `slow` (marked here, at collection, so that no test file needs to
# remember it) when
#   - it lives under tests/integration/: end-to-end runs through the API or the CLI, each of which trains a student;
#   - its file's name says `smoke` or `ddp`: the smoke tier (benchmark rows that must learn, minutes each) and the tests
#     that start several processes in a process group (DDP);
#   - or it is named in SLOW_TESTS below, with the reason (a long run or a slow tool outside those folders).
# A new test that trains end to end belongs under tests/integration/; a new slow test elsewhere gets a line in
# SLOW_TESTS (or `pytestmark = pytest.mark.slow` in its file). tests/test_tiers.py checks the fast tier stays large and
# free of these, and that every entry below still names a test.
SLOW_FOLDERS = ("tests/integration/",)
SLOW_FILE_WORDS = ("smoke", "ddp")
SLOW_TESTS = {  # a test file (all its tests) or a test's node id without its parameters -> why it is slow
    "tests/test_docs.py::test_the_site_builds_strictly": "mkdocs build --strict of the whole site",
    "tests/test_docs.py::test_documented_command_runs": "trains every runnable block of the README and getting started",
    "tests/test_docs.py::test_documented_run_of_a_method_page_trains": "trains the method pages' blocks (opt-in)",
    "tests/test_bad_input_docs.py": "collects the bad-input test files in a second pytest process",
    "tests/cache/test_cached_distill.py": "trains runs with and without the cache; one test touches a 3 GiB ballast",
    "tests/data/test_shards.py::test_training_on_local_and_http_shards_and_on_a_list_matches_the_folder": "trains 3 runs",
    "tests/methods/test_cka.py::test_a_cka_run_reports_every_task": "trains and evaluates a CKA run",
    "tests/methods/test_cka.py::test_two_unlabelled_folders_and_two_teachers_from_the_command_line": "trains a CLI run",
    # these four share one module fixture that trains a supervised cohort end to end
    "tests/methods/test_mcl.py::test_a_supervised_cohort_trains_end_to_end_with_a_row_per_member_and_the_ensemble": "trains a cohort",
    "tests/methods/test_mcl.py::test_each_member_of_the_cohort_exports": "trains a cohort",
    "tests/methods/test_mcl.py::test_ssdistill_eval_scores_the_members_classifiers_again": "trains a cohort",
    "tests/methods/test_mcl.py::test_classifiers_are_not_scored_against_a_memory_of_other_classes": "trains a cohort",
}


def is_slow(nodeid: str) -> bool:
    """Whether the test with this node id belongs to the slow tier (the rule above)."""
    path = nodeid.split("::")[0]
    name = path.rsplit("/", 1)[-1]
    return path.startswith(SLOW_FOLDERS) or any(word in name for word in SLOW_FILE_WORDS) or path in SLOW_TESTS or nodeid.split("[")[0] in SLOW_TESTS


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:  # the node id from the repository root, whatever pytest's rootdir
        if is_slow(item.path.relative_to(REPO).as_posix() + item.nodeid[len(item.nodeid.split("::")[0]) :]):
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest keep their order


MESSAGES_ENV = "SSDISTILL_RECORD_MESSAGES"  # scripts/bad_input_table.py: where the CLI's error lines are collected


@pytest.fixture(autouse=True)
def record_error_lines(monkeypatch):
    """With SSDISTILL_RECORD_MESSAGES=FILE, every one-line error the CLI prints in-process is appended to FILE with the
    test that provoked it: docs/bad-input.md is written from those lines (scripts/bad_input_table.py), so the page shows
    exactly what the tests see."""
    target = os.environ.get(MESSAGES_ENV)
    if not target:
        yield
        return
    import json

    import ssdistill.cli as cli

    original = cli.one_line

    def recorded(exc):
        line = original(exc)
        test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
        with open(target, "a") as handle:
            handle.write(json.dumps({"test": test, "message": line}) + "\n")
        return line

    monkeypatch.setattr(cli, "one_line", recorded)
    yield


@pytest.fixture(scope="session", autouse=True)
def isolated_teacher_cache(tmp_path_factory):
    """Every test session gets its own teacher cache (shared by its tests, never by later sessions)."""
    os.environ["SSDISTILL_CACHE_DIR"] = str(tmp_path_factory.mktemp("teacher-cache"))
    yield


def epoch_means(run_dir: Path, term: str) -> list[float]:
    """The epoch means of one logged loss term, in order, from a run's metrics.csv."""
    rows = csv.DictReader((run_dir / "metrics.csv").open())
    return [float(r[f"train/{term}_epoch"]) for r in rows if r.get(f"train/{term}_epoch")]


def write_images(folder: Path, count: int, size: int = 40, seed: int = 0, prefix: str = "img") -> list[Path]:
    """Random RGB JPEGs (hand-made test images)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        array = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        path = folder / f"{prefix}{i:03d}.jpg"
        Image.fromarray(array).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def labelled_folder(tmp_path: Path) -> Path:
    root = tmp_path / "labelled"
    for c, name in enumerate(["cat", "dog", "eel"]):
        write_images(root / name, 4, seed=c)
    return root


@pytest.fixture
def demo_data() -> Path:
    if not DEMO_DATA.is_dir():
        pytest.fail(f"{DEMO_DATA} missing: it ships with the repository (scripts/make_demo_data.py rebuilds it)")
    return DEMO_DATA


def shared_weights(name: str) -> Path:
    matches = sorted((SHARED / "weights").glob(f"{name}-*.th"))
    if not matches:
        pytest.skip(f"{SHARED / 'weights'} has no {name} weights (only in checkouts with ../shared)")
    return matches[0]


def write_tar(path: Path, members: dict[str, bytes]) -> None:
    """An uncompressed tar file of ``members`` (name -> bytes), in that order: hand-made WebDataset shards."""
    import io
    import tarfile

    with tarfile.open(path, "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
