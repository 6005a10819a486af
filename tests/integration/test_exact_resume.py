"""A killed run resumes to the very student an uninterrupted run reaches: data order, every item's augmentations and
every step's random draws are functions of (seed, epoch, image / step), and the rest (weights, optimiser, schedule,
queues, EMA encoders) travels in the checkpoint. Checked in-process and with real processes killed by SIGKILL."""

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from integration.common import tiny_config
from integration.test_distill import Interrupt
from ssdistill import distill


def _student(run_dir):
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    return {k: v for k, v in state.items() if not k.startswith("teacher")}


def _step_rows(run_dir):
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    return [(r["step"], r.get("train/loss_step", "")) for r in rows if r.get("train/loss_step")]


@pytest.mark.parametrize("method", [{"name": "feature", "projector_hidden": [32]}, {"name": "bingo", "bag_size": 4, "queue_size": 64}])
def test_a_resumed_run_equals_the_uninterrupted_one_bitwise(tmp_path, method):
    """BINGO also draws neighbours, cutmix boxes and teacher views, and carries a queue."""
    base = tiny_config(tmp_path, trainer={"epochs": 3})
    base["method"] = method
    whole = distill({**base, "run": {"dir": str(tmp_path / "runs"), "name": "whole"}}, quiet=True)
    killed = {**base, "run": {"dir": str(tmp_path / "runs"), "name": "killed"}}
    with pytest.raises(RuntimeError, match="simulated kill"):
        distill(killed, callbacks=[Interrupt(at=2)], quiet=True)
    resumed = distill(resume=tmp_path / "runs" / "killed", quiet=True)
    a, b = _student(tmp_path / "runs" / "whole"), _student(tmp_path / "runs" / "killed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["knn"]["student"]["top1"] == whole["knn"]["student"]["top1"]
    assert _step_rows(tmp_path / "runs" / "killed") == _step_rows(tmp_path / "runs" / "whole")  # no step twice, same losses


def test_a_process_killed_by_sigkill_resumes_to_the_same_student(tmp_path):
    """Real `ssdistill distill` processes with two data-loading workers: one runs through, one is SIGKILLed while its
    third epoch runs (right after the second epoch's checkpoint appears, possibly while it is written) and resumed."""
    config = tiny_config(tmp_path, trainer={"epochs": 4}, data={"num_workers": 2})
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(config))
    cli = [sys.executable, "-m", "ssdistill", "distill", "--config", str(tmp_path / "recipe.yaml")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*cli, "run.name=whole"], check=True, env=env, capture_output=True)
    victim = subprocess.Popen([*cli, "run.name=killed"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = tmp_path / "runs" / "killed"
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoints" / "epoch001.ckpt").exists():
        assert victim.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (run_dir / "results.json").exists()
    subprocess.run([*cli[:3], "distill", "--resume", str(run_dir)], check=True, env=env, capture_output=True)
    a, b = _student(tmp_path / "runs" / "whole"), _student(run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
