import math

import pytest

from ssdistill.engine.rundir import new_run_dir
from ssdistill.engine.schedule import warmup_cosine
from ssdistill.files import atomic_write_text


def test_warmup_cosine_values():
    assert warmup_cosine(0, 10, 110, peak=1.0) == 0.0
    assert warmup_cosine(5, 10, 110, peak=1.0) == pytest.approx(0.5)
    assert warmup_cosine(10, 10, 110, peak=1.0) == pytest.approx(1.0)
    assert warmup_cosine(60, 10, 110, peak=1.0, end=0.0) == pytest.approx(0.5)
    assert warmup_cosine(35, 10, 110, peak=2.0, end=0.0) == pytest.approx(1.0 + math.cos(math.pi / 4))
    assert warmup_cosine(110, 10, 110, peak=1.0, end=0.1) == pytest.approx(0.1)
    assert warmup_cosine(0, 0, 10, peak=1.0) == pytest.approx(1.0)


def test_run_dirs_are_never_reused(tmp_path, monkeypatch):
    monkeypatch.delenv("SSDISTILL_RUN_DIR", raising=False)
    first = new_run_dir(tmp_path, "demo", "feature")
    second = new_run_dir(tmp_path, "demo", "feature")
    assert first.name == "demo" and second.name == "demo-2" and second.is_dir()
    assert new_run_dir(tmp_path, None, "feature").name.startswith("feature-")


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "a" / "x.json"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]
