"""A killed run resumes to the very student an uninterrupted run reaches: data order, every item's augmentations and
every step's random draws are functions of (seed, epoch, image / step), and the rest (weights, optimiser, schedule,
queues, EMA encoders) travels in the checkpoint. Checked in-process and with real processes killed by SIGKILL."""

import csv
import os
import signal
import subprocess
import sys
import time

import lightning as L
import pytest
import torch
import yaml

from ssdistill import distill

from integration.common import tiny_config
from integration.test_distill import Interrupt


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


class Record(L.Callback):
    """Records (step, images of the batch, sum of its pixels); raises at ``kill_at`` (a kill mid-epoch)."""

    def __init__(self, kill_at=None):
        self.seen, self.kill_at = [], kill_at

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.kill_at:
            raise RuntimeError("simulated kill")
        views = batch["views"]["student"]
        self.seen.append((trainer.global_step, batch["index"].tolist(), float(views.sum()), views.flatten(1).sum(1).tolist()))


def test_every_epoch_draws_new_batches_and_views(tmp_path):
    """Lightning calls set_epoch on a loader's sampler, never on a batch sampler: the epoch must still reach it."""
    record = Record()
    distill(tiny_config(tmp_path, trainer={"epochs": 2}), callbacks=[record], quiet=True)
    epoch0, epoch1 = record.seen[:4], record.seen[4:]
    assert [b[1] for b in epoch0] != [b[1] for b in epoch1]  # a new order
    views = [{i: v for record in epoch for i, v in zip(record[1], record[3])} for epoch in (epoch0, epoch1)]
    shared = [i for i in views[0] if i in views[1]]
    assert shared and all(views[0][i] != views[1][i] for i in shared)  # and new augmentations of the same images


def test_a_run_killed_mid_epoch_resumes_from_its_step_checkpoint_to_the_same_student(tmp_path):
    """trainer.checkpoint_every_n_steps=2, killed at step 7 (inside epoch 1, one step after the step-6 checkpoint): the
    resumed run continues with the batch after the last one it trained and ends bitwise where an uninterrupted run does."""
    base = tiny_config(tmp_path, trainer={"epochs": 3, "checkpoint_every_n_steps": 2})
    whole, killed = Record(), Record(kill_at=7)
    distill({**base, "run": {"dir": str(tmp_path / "runs"), "name": "whole"}}, callbacks=[whole], quiet=True)
    with pytest.raises(RuntimeError, match="simulated kill"):
        distill({**base, "run": {"dir": str(tmp_path / "runs"), "name": "killed"}}, callbacks=[killed], quiet=True)
    assert torch.load(tmp_path / "runs" / "killed" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6
    again = Record()
    distill(resume=tmp_path / "runs" / "killed", callbacks=[again], quiet=True)
    assert again.seen == whole.seen[6:]  # the same batches and views from step 6 on
    a, b = _student(tmp_path / "runs" / "whole"), _student(tmp_path / "runs" / "killed")
    assert all(torch.equal(a[k], b[k]) for k in a)


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
