"""End-to-end runs: resume works, exports load, errors are clear (learning on real images: test_real_images.py)."""

import csv
import json
import subprocess
import sys

import lightning as L
import pytest
import torch

from ssdistill import distill
from ssdistill.api import load_student_from_run

from conftest import REPO
from integration.common import tiny_config


def _epoch_losses(run_dir):
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    return {int(r["epoch"]): float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")}


class Interrupt(L.Callback):
    """Simulates a killed run: fails at the start of epoch ``at`` (after that epoch's predecessor was checkpointed)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == self.at:
            raise RuntimeError("simulated kill")


def test_resume_continues_an_interrupted_run(tmp_path):
    config = tiny_config(tmp_path)
    with pytest.raises(RuntimeError, match="simulated kill"):
        distill(config, callbacks=[Interrupt(at=2)], quiet=True)
    run_dir = tmp_path / "runs" / "tiny"
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["epoch"] == 1 and checkpoint["global_step"] == 8
    seconds_before_kill = checkpoint["callbacks"]["TrainingClock"]["seconds"]
    epochs_before_kill = checkpoint["callbacks"]["TrainingClock"]["epoch_seconds"]
    assert seconds_before_kill > 0 and len(epochs_before_kill) == 2 and sum(epochs_before_kill) <= seconds_before_kill
    assert not (run_dir / "results.json").exists()
    _, at_kill = load_student_from_run(run_dir)

    seen_start = {}

    class FirstStep(L.Callback):
        def on_train_start(self, trainer, module):
            seen_start["epoch"], seen_start["step"] = trainer.current_epoch, trainer.global_step
            seen_start["weights"] = {k: v.clone() for k, v in module.student.state_dict().items()}

    results = distill(resume=run_dir, callbacks=[FirstStep()], quiet=True)
    assert seen_start["epoch"] == 2 and seen_start["step"] == 8
    assert all(torch.equal(v, at_kill.state_dict()[k]) for k, v in seen_start["weights"].items())
    assert results["steps"] == 12
    timing = results["timing"]  # training time of both attempts (up to the checkpoint resumed from) is reported
    assert timing["train_seconds"] == pytest.approx(seconds_before_kill + timing["train_seconds_this_attempt"])
    # each epoch's batches, both attempts: the time to a quality reached at epoch e is the sum of the first e
    assert timing["epoch_train_seconds"][:2] == pytest.approx(epochs_before_kill, abs=1e-3) and len(timing["epoch_train_seconds"]) == 3
    assert 0 < sum(timing["epoch_train_seconds"]) <= timing["train_seconds"]
    assert set(_epoch_losses(run_dir)) == {0, 1, 2}  # the first attempt's metrics were kept
    assert (run_dir / "results.json").exists()
    assert not list((tmp_path / "runs").glob("tiny-*"))  # resumed in place, no new run dir


def test_resume_refuses_config_drift_and_touches_nothing_before_the_check(tmp_path):
    """A resumed run keeps its config: changes to what is trained are refused in one line naming the keys, and neither
    config.yaml nor metrics.csv changes; evaluation and logging settings may change; --force resumes and records the
    change; a finished run has nothing to resume, and trainer.epochs extends it."""
    from ssdistill.errors import ConfigError

    with pytest.raises(RuntimeError, match="simulated kill"):
        distill(tiny_config(tmp_path), callbacks=[Interrupt(at=2)], quiet=True)
    run_dir = tmp_path / "runs" / "tiny"
    before = {name: (run_dir / name).read_bytes() for name in ("config.yaml", "metrics.csv")}
    refused = {
        "optim.lr=0.01": "optim.lr: 0.05 -> 0.01",
        "method.loss=mse": "method.loss: 'cosine' -> 'mse'",
        "data.batch_size=8": "data.batch_size: 16 -> 8",
        "student.arch=resnet18": "student.arch: 'test_resnet' -> 'resnet18'",
        "trainer.epochs=2": "cannot shorten",
    }
    for override, message in refused.items():
        with pytest.raises(ConfigError, match="start a new run") as error:
            distill(resume=run_dir, overrides=[override], quiet=True)
        assert message in str(error.value) and "\n" not in str(error.value)
        assert {name: (run_dir / name).read_bytes() for name in before} == before
    results = distill(resume=run_dir, overrides=["optim.lr=0.04", "eval.knn_k=5"], force=True, quiet=True)
    assert results["resumed_with_changes"] == ["optim.lr: 0.05 -> 0.04"]  # the evaluation change is safe, not listed
    assert results["steps"] == 12 and results["protocol"]["knn"]["k"] == 5
    finished = (run_dir / "results.json").read_bytes()
    with pytest.raises(ConfigError, match="finished all 3 epochs"):
        distill(resume=run_dir, quiet=True)
    assert (run_dir / "results.json").read_bytes() == finished
    extended = distill(resume=run_dir, overrides=["trainer.epochs=4"], quiet=True)
    assert extended["steps"] == 16 and extended["epochs"] == 4 and set(_epoch_losses(run_dir)) == {0, 1, 2, 3}


def test_a_damaged_last_checkpoint_falls_back_to_the_newest_readable_one(tmp_path, caplog):
    with pytest.raises(RuntimeError, match="simulated kill"):
        distill(tiny_config(tmp_path), callbacks=[Interrupt(at=2)], quiet=True)
    run_dir = tmp_path / "runs" / "tiny"
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # killed while it was written
    results = distill(resume=run_dir, quiet=True)
    assert f"checkpoint {last} cannot be read" in caplog.text and results["steps"] == 12  # a warning of the package logger


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    """A failure while a checkpoint is written (a kill, a full disk) leaves the previous last.ckpt whole."""
    import torch

    from ssdistill.errors import StorageError

    with pytest.raises(RuntimeError, match="simulated kill"):
        distill(tiny_config(tmp_path), callbacks=[Interrupt(at=2)], quiet=True)
    last = tmp_path / "runs" / "tiny" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    save = torch.save

    def dies_half_way(checkpoint, handle, *args, **kwargs):
        if isinstance(checkpoint, dict) and "state_dict" in checkpoint:  # a checkpoint, not another file of the run
            handle.write(b"half a checkpoint")
            raise OSError(28, "No space left on device")
        return save(checkpoint, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(StorageError, match="no space left on the device"):
        distill(resume=tmp_path / "runs" / "tiny", quiet=True)
    assert last.read_bytes() == before and not [p for p in last.parent.iterdir() if p.name.startswith(".")]


def test_a_moved_run_resumes_in_place_and_exports_its_final_student(tmp_path):
    """Killed, moved elsewhere, resumed: the final weights land in the moved folder's last.ckpt (no last-v1.ckpt beside a
    stale one), which is what export ships."""
    import shutil

    from safetensors.torch import load_file

    from ssdistill.export import export_run

    with pytest.raises(RuntimeError, match="simulated kill"):
        distill(tiny_config(tmp_path), callbacks=[Interrupt(at=2)], quiet=True)
    moved = tmp_path / "elsewhere" / "tiny"
    shutil.move(str(tmp_path / "runs" / "tiny"), str(moved))
    trained = {}

    class Final(L.Callback):
        def on_train_end(self, trainer, module):
            trained.update({k: v.clone() for k, v in module.student.backbone.state_dict().items()})

    distill(resume=moved, callbacks=[Final()], quiet=True)
    assert sorted(p.name for p in (moved / "checkpoints").glob("last*")) == ["last.ckpt"]
    assert torch.load(moved / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 12
    exported = load_file(str(export_run(moved)["weights"]))
    assert all(torch.equal(exported[k], v) for k, v in trained.items())


def test_export_of_an_unfinished_run_needs_allow_unfinished_and_records_its_epochs(tmp_path):
    from ssdistill.errors import ModelError
    from ssdistill.export import export_run

    with pytest.raises(RuntimeError, match="simulated kill"):
        distill(tiny_config(tmp_path), callbacks=[Interrupt(at=2)], quiet=True)
    run_dir = tmp_path / "runs" / "tiny"
    with pytest.raises(ModelError, match="holds 2 of the run's 3 epochs .* --allow-unfinished"):
        export_run(run_dir)
    config = json.loads(export_run(run_dir, allow_unfinished=True)["config"].read_text())["ssdistill"]
    assert (config["epochs"], config["planned_epochs"]) == (2, 3)


def test_a_diverged_run_saves_nothing_non_finite(tmp_path):
    """A weight that turns non-finite at the end of epoch 1 stops the run before that epoch's checkpoint: last.ckpt still
    holds epoch 0's finite weights."""
    from ssdistill.errors import TrainingError

    class Diverge(L.Callback):
        def on_train_epoch_end(self, trainer, module):
            if trainer.current_epoch == 1:
                next(module.student.parameters()).data.fill_(float("nan"))

    with pytest.raises(TrainingError, match="became non-finite by step 8; nothing was saved"):
        distill(tiny_config(tmp_path), callbacks=[Diverge()], quiet=True)
    last = torch.load(tmp_path / "runs" / "tiny" / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 4 and all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


def test_a_failed_start_leaves_nothing_behind(tmp_path):
    """A run that fails before its first checkpoint (here: a batch larger than the data) leaves no directory, so the
    corrected rerun gets the name."""
    from ssdistill.errors import DataError

    with pytest.raises(DataError, match="lower the batch size"):
        distill(tiny_config(tmp_path, data={"batch_size": 128}), quiet=True)
    assert not (tmp_path / "runs" / "tiny").exists()
    assert distill(tiny_config(tmp_path, trainer={"epochs": 1}), quiet=True)["run_dir"].endswith("tiny")


def test_a_finished_run_is_never_overwritten(tmp_path):
    config = tiny_config(tmp_path, trainer={"epochs": 1})
    first = distill(config, quiet=True)
    second = distill(config, quiet=True)
    assert first["run_dir"] != second["run_dir"] and second["run_dir"].endswith("tiny-2")


def test_corrupt_image_during_training_names_the_file(tmp_path):
    import shutil

    from conftest import DEMO_DATA

    data = tmp_path / "data"
    shutil.copytree(DEMO_DATA / "train" / "n01440764", data / "n01440764")
    bad = data / "n01440764" / "zz_broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    config = tiny_config(tmp_path, data={"train": str(data), "train_subset": None, "val": None})
    from ssdistill.errors import DataError

    with pytest.raises(DataError, match="zz_broken.jpg"):
        distill(config, quiet=True)
    skipped = distill(
        tiny_config(tmp_path, data={"train": str(data), "train_subset": None, "val": None, "skip_corrupt": True}, trainer={"epochs": 1}), quiet=True
    )
    assert skipped["data"]["skipped_unreadable"] == [str(bad)]
    assert skipped["data"]["train_size"] == 100 and skipped["knn"] is None and "data.val" in skipped["knn_note"]


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "ssdistill", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys):
    from ssdistill.cli import main

    unknown = _cli("distill", "--config", "configs/demo/feature.yaml", "trainer.epoch=1")  # the installed entry point
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "error: unknown config key 'trainer.epoch'; did you mean 'trainer.epochs'?"
    capsys.readouterr()
    with pytest.raises(SystemExit) as missing:  # the rest in this process: the same main(), without a Python start each
        main(["distill", f"data.train={tmp_path / 'nowhere'}", f"run.dir={tmp_path}"])
    err = capsys.readouterr().err
    assert missing.value.code == 2 and "not found" in err and len(err.strip().splitlines()) == 1
    main(["list"])
    listing = capsys.readouterr().out
    assert "feature" in listing and "efficientnet_lite0" in listing and "recommended" in listing
    assert "[preset: official]" in next(line for line in listing.splitlines() if line.strip().startswith("bingo"))
    assert "[preset: official]" not in next(line for line in listing.splitlines() if line.strip().startswith("feature"))
    with pytest.raises(SystemExit) as helped:
        main(["distill", "--help"])
    helptext = capsys.readouterr().out
    assert helped.value.code == 0 and "trainer.epochs" in helptext and "method.loss" in helptext and "--recipe" in helptext


def test_cli_distill_and_eval_of_the_run(tmp_path):
    import yaml

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_config(tmp_path, trainer={"epochs": 1}, eval={"random_init": True})))
    done = _cli("distill", "--config", str(recipe))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "random-init test_resnet" in done.stdout and "distilled test_resnet" in done.stdout
    run_dir = tmp_path / "runs" / "tiny"
    evaluated = _cli("eval", str(run_dir), "--json", "--num-workers", "0")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    printed = json.loads(evaluated.stdout)
    knn = printed["knn"]
    record = json.loads((run_dir / "results.json").read_text())["knn"]
    assert set(knn) == {"random_init", "student"} and set(printed["evaluation"]["models"]) == {"random_init", "student"}
    assert knn["student"]["top1"] == pytest.approx(record["student"]["top1"])
