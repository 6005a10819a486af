"""Bad input costs the user one line: each case runs the real CLI and must exit with code 2, print exactly one line on
stderr (``error: ...``, no traceback) containing the expected fragment, and leave no run directory behind."""

import shutil

import pytest
import yaml

from ssdistill.cli import main

from conftest import DEMO_DATA
from integration.common import tiny_config


def _setup(tmp_path):
    """A tiny recipe on disk, a file where folders are expected, a junk weights file, a folder of images without classes
    and a training folder with one truncated JPEG."""
    config = tiny_config(tmp_path)
    config["cache"] = {"dir": str(tmp_path / "cache")}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "bad.yaml").write_text("method:\n  name: feature\n data: [\n")
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "junk.pth").write_bytes(bytes(range(256)) * 3)
    broken = tmp_path / "broken"
    for cls in ("n01440764", "n02102040"):
        shutil.copytree(DEMO_DATA / "train" / cls, broken / cls)
    (broken / "n01440764" / "zz_truncated.JPEG").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return tmp_path


CASES = [  # (case, arguments after `distill --config recipe.yaml` unless they start with a command, message fragment)
    ("YAML syntax error with its line", ["distill", "--config", "{t}/bad.yaml"], "not valid YAML at line 3, column 2"),
    ("unknown key", ["trainer.epoch=3"], "did you mean 'trainer.epochs'"),
    ("junk weights file", ["teacher.weights={t}/junk.pth"], "neither a PyTorch checkpoint nor a safetensors file"),
    ("missing weights file", ["teacher.weights={t}/none.pth"], "teacher.weights={t}/none.pth not found"),
    ("run.dir is a file", ["run.dir={t}/a_file"], "is a file, not a folder"),
    ("run.dir under a file", ["run.dir={t}/a_file/runs"], "cannot create a run directory under run.dir"),
    ("cache.dir under a file", ["cache.dir={t}/a_file/cache"], "is not writable (Not a directory)"),
    ("train_subset=0", ["data.train_subset=0"], "'data.train_subset': Input should be greater than 0"),
    ("train_subset negative", ["data.train_subset=-5"], "'data.train_subset': Input should be greater than 0"),
    ("data.train missing", ["data.train={t}/nothere"], "data path {t}/nothere not found"),
    ("data.val missing", ["data.val={t}/nothere"], "data path {t}/nothere not found"),
    ("data.val without class folders", [f"data.val={DEMO_DATA}/val/n01440764"], "has no class sub-folders"),
    ("batch larger than the data", ["data.batch_size=1000"], "lower the batch size"),
    (
        "hub teacher unreachable",
        ["teacher.name=resnet18", "teacher.source=hub", "teacher.weights=null"],
        "set teacher.weights=PATH to a local weights file",
    ),
    (
        "corrupt JPEG read by two workers",
        ["data.train={t}/broken", "data.train_subset=null", "data.num_workers=2", "data.val=null"],
        "zz_truncated.JPEG",
    ),
    ("resume of a folder that is no run", ["distill", "--resume", "{t}/a_file"], "is not a run directory"),
    ("export of a folder that is no run", ["export", "{t}"], "is not a run directory"),
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return _setup(tmp_path_factory.mktemp("bad_input"))


@pytest.mark.parametrize("case, arguments, fragment", CASES, ids=[case for case, _, _ in CASES])
def test_bad_input_is_one_line_and_leaves_nothing_behind(workdir, capsys, case, arguments, fragment):
    t = str(workdir)
    arguments = [a.format(t=t) for a in arguments]
    argv = arguments if arguments[0] in ("distill", "export", "cache", "eval") else ["distill", "--config", f"{t}/recipe.yaml", *arguments]
    with pytest.raises(SystemExit) as exit_code:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert exit_code.value.code == 2, err
    assert len(errors) == 1 and fragment.format(t=t) in errors[0], err
    assert not any("Traceback" in line for line in err), err
    assert not (workdir / "runs").exists() or not any((workdir / "runs").iterdir())


def test_ctrl_c_during_a_cache_fill_is_one_line_and_the_fill_resumes(tmp_path):
    """SIGINT while `ssdistill cache` fills an entry: exit code 130, one line on stderr, no traceback; the next fill
    completes the entry."""
    import os
    import signal
    import subprocess
    import sys
    import time

    command = [
        sys.executable,
        "-m",
        "ssdistill",
        "cache",
        "--teacher",
        "efficientnet_lite0",
        "--data",
        str(DEMO_DATA / "val"),
        "--dir",
        str(tmp_path),
        "--batch-size",
        "32",
        "--num-workers",
        "0",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # SIGINT as a terminal delivers it: a test run started as a background job (its shell ignores SIGINT, and children
    # inherit that) would otherwise never see the signal
    fill = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not any(tmp_path.glob("*/chunks")):
        assert fill.poll() is None and time.monotonic() < deadline, "the fill ended before it could be interrupted"
        time.sleep(0.05)
    time.sleep(1.0)
    fill.send_signal(signal.SIGINT)
    err = [line for line in fill.communicate(timeout=60)[1].splitlines() if line.strip() and "%|" not in line]
    assert fill.returncode == 130 and not any("Traceback" in line for line in err), err
    assert [line for line in err if line.startswith("interrupted")] == [
        "interrupted: a run resumes with `ssdistill distill --resume RUN_DIR`, a cache fill where it stopped"
    ]
    entry = next(tmp_path.glob("*/chunks")).parent
    assert not (entry / "manifest.json").exists()
    subprocess.run(command, env=env, check=True, capture_output=True)
    assert (entry / "manifest.json").exists()
