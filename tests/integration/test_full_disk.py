"""A full disk costs the user one line and leaves nothing stale, through the real CLI: a teacher-cache fill into a full
folder and a checkpoint into a full run.dir exit with code 2 and one ``error: ...`` line (how much space, where), with no
claim, staging file or run directory left behind; a run whose $TMPDIR is tiny still completes (nothing is staged there).

Real full disks are small tmpfs mounts (the test machine runs as root); where mounting is not permitted those tests skip,
and the simulated ones (the file system's ENOSPC raised by a patched call) cover the same logic anywhere."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml

from ssdistill.cli import main

from integration.common import tiny_config

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def mounted_tmpfs(folder: Path, size: str):
    """``folder`` as a tmpfs of ``size`` (``2m``, ``64k``) for the block; skips the test where mounting is not
    permitted (not root, or no mount namespace)."""
    folder.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill_up(folder: Path, leave: int = 4096) -> None:
    """Take all but ``leave`` bytes of the file system holding ``folder``."""
    free = shutil.disk_usage(folder).free
    with open(folder / "filler", "wb") as handle:
        handle.write(bytes(max(0, free - leave)))


def remount(folder: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], check=True, capture_output=True)


def leftovers(folder: Path) -> list[str]:
    """Claims, staging files and cache entries under ``folder`` (the filler excepted)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name != "filler")


def _recipe(tmp_path: Path, **updates) -> Path:
    config = tiny_config(tmp_path, **updates)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed command in a process of its own: a crash by signal (SIGBUS from a memory map) shows as its exit code."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "ssdistill", *args], capture_output=True, text=True, cwd=REPO, env=environment, timeout=300)


@pytest.fixture(autouse=True)
def _cli_logging_of_this_test_only():
    """``main`` adds a stderr handler to the package's logger at each call: drop it after the test (a later test's
    warning would otherwise go to this test's closed capture)."""
    logger = logging.getLogger("ssdistill")
    before = list(logger.handlers)
    yield
    logger.handlers[:] = before


def _run_in_process(capsys, argv: list[str]) -> tuple[int, str]:
    """Exit code and stderr of the CLI run in this process, warnings (lines of their own) left out."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, _without_warnings(capsys.readouterr().err)


def _without_warnings(stderr: str) -> str:
    return "\n".join(line for line in stderr.strip().splitlines() if not line.startswith("WARNING: "))


def test_a_cache_fill_into_a_full_folder_is_one_line_and_leaves_nothing(tmp_path):
    recipe = _recipe(tmp_path)
    with mounted_tmpfs(tmp_path / "cache", "1m") as cache:
        fill_up(cache)
        done = _cli("distill", "--config", str(recipe), f"cache.dir={cache}")
        assert done.returncode == 2, (done.returncode, done.stderr[-2000:])  # 135 was SIGBUS
        lines = _without_warnings(done.stderr).splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("error: the teacher cache entry test_resnet (64 x ") and "float16) needs " in lines[0]
        assert f"in {cache} (no space left on the device, " in lines[0] and "cache.dir=PATH" in lines[0]
        assert leftovers(cache) == []  # no claim, no staging file, no half entry
    assert not (tmp_path / "runs" / "tiny").exists()  # the run failed before training: no run folder


def test_the_cache_command_into_a_full_folder_is_one_line(tmp_path, capsys):
    tiny_config(tmp_path)  # writes the teacher weights
    with mounted_tmpfs(tmp_path / "cache", "1m") as cache:
        fill_up(cache)
        argv = [
            "cache",
            "--teacher",
            "test_resnet",
            "--weights",
            str(tmp_path / "teacher.safetensors"),
            "--data",
            str(REPO / "data" / "imagenette_mini" / "val"),
            "--dir",
            str(cache),
            "--num-workers",
            "0",
        ]
        code, err = _run_in_process(capsys, argv)
        assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: the teacher cache entry test_resnet (")
        assert f"in {cache} (no space left on the device, " in err
        assert leftovers(cache) == []


def test_a_checkpoint_into_a_full_run_dir_is_one_line(tmp_path, capsys):
    recipe = _recipe(tmp_path, trainer={"epochs": 1})
    with mounted_tmpfs(tmp_path / "runs", "96k") as runs:
        code, err = _run_in_process(capsys, ["distill", "--config", str(recipe), f"cache.dir={tmp_path / 'cache'}"])
        assert code == 2 and len(err.splitlines()) == 1, err
        assert err.startswith("error: checkpoint ") and f"in {runs / 'tiny' / 'checkpoints'} (no space left on the device" in err, err
        assert err.endswith("; free space there or set run.dir to another folder")
        assert leftovers(runs) == []  # the run folder of a run that never checkpointed, and no staging file


def test_a_run_with_a_tiny_tmpdir_completes(tmp_path, monkeypatch, capsys):
    """Lightning stages a local checkpoint in the system temp folder (fsspec's transaction); ours are staged beside
    their path, so a $TMPDIR too small for a checkpoint changes nothing."""
    recipe = _recipe(tmp_path, trainer={"epochs": 1})
    with mounted_tmpfs(tmp_path / "tmp", "32k") as tmp:
        monkeypatch.setenv("TMPDIR", str(tmp))
        monkeypatch.setattr(tempfile, "tempdir", None)  # recomputed from $TMPDIR
        assert tempfile.gettempdir() == str(tmp)
        main(["distill", "--config", str(recipe), f"cache.dir={tmp_path / 'cache'}"])
        assert (tmp_path / "runs" / "tiny" / "results.json").is_file()
        assert (tmp_path / "runs" / "tiny" / "checkpoints" / "last.ckpt").stat().st_size > 32 * 1024
        assert not [p for p in tmp.iterdir()]


# ----- simulated: the same logic wherever mounting is not permitted --------------------------------------------------


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_simulated_full_disk_in_a_cache_fill_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    recipe = _recipe(tmp_path)
    cache = tmp_path / "cache"
    monkeypatch.setattr(os, "posix_fallocate", _no_space)
    code, err = _run_in_process(capsys, ["distill", "--config", str(recipe), f"cache.dir={cache}"])
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: the teacher cache entry test_resnet (64 x ") and f"in {cache} (no space left on the device, " in err
    assert leftovers(cache) == [] and not (tmp_path / "runs" / "tiny").exists()


def test_simulated_quota_in_a_checkpoint_write_is_one_line(tmp_path, monkeypatch, capsys):
    recipe = _recipe(tmp_path, trainer={"epochs": 1})

    def over_quota(obj, target, *args, **kwargs):
        target.write(b"partial")
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(torch, "save", over_quota)
    code, err = _run_in_process(capsys, ["distill", "--config", str(recipe), f"cache.dir={tmp_path / 'cache'}"])
    checkpoints = tmp_path / "runs" / "tiny" / "checkpoints"
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: checkpoint epoch000.ckpt needs about ") and f"in {checkpoints} (the disk quota is exceeded)" in err, err
    assert not (tmp_path / "runs" / "tiny").exists()


def test_a_checkpoint_folder_that_fails_is_one_line_naming_it(tmp_path, monkeypatch):
    from ssdistill.errors import StorageError
    from ssdistill.models.checkpoints import save_checkpoint_file

    state = {"state_dict": {"w": torch.zeros(1000)}, "epoch": 1}
    for code, expected in (
        (
            errno.EROFS,
            f"cannot write checkpoint last.ckpt in {tmp_path}: the folder is not writable (Read-only file system); make the "
            "folder writable or set run.dir to another folder",
        ),
        (errno.EIO, f"cannot write checkpoint last.ckpt in {tmp_path} (Input/output error); check the disk or set run.dir to another folder"),
    ):

        def failing(obj, target, *args, code=code, **kwargs):
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(torch, "save", failing)
        with pytest.raises(StorageError) as caught:
            save_checkpoint_file(state, tmp_path / "last.ckpt")
        assert str(caught.value) == expected
        assert list(tmp_path.iterdir()) == []  # no staging file


def test_a_run_dir_too_full_for_the_config_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    """The first write of a new run (config.yaml, right after its folder and lock) on a full disk: one line, exit 2, and
    neither the run folder nor its lock file is left."""
    import ssdistill.api as api

    recipe = _recipe(tmp_path)

    def full(cfg, run_dir):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(api, "write_config", full)
    code, err = _run_in_process(capsys, ["distill", "--config", str(recipe), f"cache.dir={tmp_path / 'cache'}"])
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: config.yaml needs more space in {tmp_path / 'runs' / 'tiny'} (no space left on the device"), err
    assert err.endswith("; free space there or set run.dir to another folder"), err
    assert not (tmp_path / "runs" / "tiny").exists()
