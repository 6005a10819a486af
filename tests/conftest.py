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
    "tests/integration/test_real_images.py", "tests/bench/test_smoke_tier.py", "tests/integration/test_ddp.py",
    "tests/bench/test_smoke_tier_b.py", "tests/integration/test_real_images_ssl.py",
)


def pytest_collection_modifyitems(config, items):
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
