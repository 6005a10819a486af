"""The cache is invisible: a run that reads teacher signals from it trains like one that runs the teacher online."""

import os
import platform

import pytest
import torch

from ssdistill import distill
from ssdistill.api import load_student_from_run
from ssdistill.cache.store import list_entries

from integration.common import tiny_config


def test_cached_run_equals_online_teacher_run_on_the_original_view(tmp_path):
    cache_dir = str(tmp_path / "cache")
    common = {"aug": {"recipe": "none"}, "trainer": {"epochs": 2}}
    cached = distill(tiny_config(tmp_path, cache={"dir": cache_dir, "dtype": "float32"}, run={"name": "cached"}, **common), quiet=True)
    online = distill(tiny_config(tmp_path, teacher={"precompute": False}, run={"name": "online"}, **common), quiet=True)
    assert cached["steps"] == online["steps"] == 8
    _, a = load_student_from_run(cached["run_dir"])
    _, b = load_student_from_run(online["run_dir"])
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(x.float(), y.float(), atol=1e-4, rtol=1e-3), name
    assert [e["state"] for e in list_entries(cache_dir)] == ["complete"]


def test_second_run_reuses_the_entry(tmp_path, monkeypatch):
    first = distill(tiny_config(tmp_path, trainer={"epochs": 1}, run={"name": "a"}), quiet=True)
    entries = list_entries(os.environ["SSDISTILL_CACHE_DIR"])
    import ssdistill.cache.fill as fill

    # the second run must read the complete entry back: computing the teacher on any image now fails the test
    refill = lambda rows: pytest.fail("the teacher ran again instead of reading the cache")  # noqa: E731
    monkeypatch.setattr(fill, "teacher_compute", lambda *args, **kwargs: refill)
    second = distill(tiny_config(tmp_path, trainer={"epochs": 1}, run={"name": "b"}), quiet=True)
    assert list_entries(os.environ["SSDISTILL_CACHE_DIR"]) == entries
    assert first["signals"]["teacher"]["fingerprint"] == second["signals"]["teacher"]["fingerprint"]


def test_results_record_the_peak_memory_of_the_run(tmp_path):
    import resource

    results = distill(tiny_config(tmp_path, trainer={"epochs": 1}), quiet=True)
    peak = results["timing"]["peak_rss_mb"]
    # Linux: KiB; the process only grows its peak. The record may be a finished child's (data workers), and the test
    # process may have run larger children before (other tests' subprocesses), so the bound is the larger of the two
    now_kib = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    assert 100 < peak <= now_kib / 1024 + 1e-6  # torch alone is well above 100 MiB


@pytest.mark.skipif(platform.system() != "Linux", reason="the exec'd high-water mark and /proc/self/status are Linux behaviour")
def test_peak_memory_of_a_run_started_by_a_large_process_is_its_own():
    """ru_maxrss of an exec'd process carries its spawner's high-water mark; the recorded peak must not."""
    import subprocess
    import sys

    ballast = bytearray(3 * 1024**3)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page: the spawner's resident set is now > 3 GiB
    code = "import resource; from ssdistill.engine.records import peak_rss_mb; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, peak_rss_mb())"
    inherited, peak = map(float, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    del ballast
    assert inherited > 3 * 1024  # the kernel's figure includes this test process's 3 GiB
    assert 100 < peak < 2 * 1024  # importing torch, Lightning and timm takes well under 2 GiB


def test_cache_fill_from_a_config_fills_the_bank_a_run_then_reads(tmp_path, capsys):
    """`ssdistill cache --config CONFIG [key=value]` fills the entries a run of the config reads (here a RoB bank of 2
    global crops per image) without training; the run then takes its bank from the cache, filled already."""
    import yaml

    from ssdistill.cli import main
    from ssdistill.errors import SsdistillError

    cache_dir = str(tmp_path / "cache")
    raw = tiny_config(tmp_path, cache={"dir": cache_dir}, trainer={"epochs": 1})
    raw["method"] = {"name": "rob", "projection_dim": 8, "local_crops": 1, "teacher_crops": "bank", "bank_repeats": 3}
    config = tmp_path / "rob.yaml"
    config.write_text(yaml.safe_dump(raw))
    main(["cache", "fill", "--config", str(config), "method.bank_repeats=2"])
    assert "signal teacher: teacher 'teacher', tap pooled, bank view, from cache (bank)" in capsys.readouterr().out
    (entry,) = [e for e in list_entries(cache_dir) if e["state"] == "complete"]
    assert entry["shape"][0] == 2 * 64  # 64 training images (data.train_subset), 2 crops each: the override applied
    stamp = {path: path.stat().st_mtime_ns for path in (tmp_path / "cache").rglob("*") if path.is_file()}
    raw["method"]["bank_repeats"] = 2
    results = distill(raw, quiet=True)
    assert results["signals"]["teacher"]["from"] == "cache (bank)"
    assert {path: path.stat().st_mtime_ns for path in stamp} == stamp  # read, not refilled
    with pytest.raises(SystemExit):
        main(["cache", "--config", str(config), "--teacher", "test_resnet"])
    assert "drop --teacher / --data" in capsys.readouterr().err
    with pytest.raises(SsdistillError, match="cache.enabled is false"):
        from ssdistill.api import fill_run_cache

        fill_run_cache(config, ["cache.enabled=false"])
