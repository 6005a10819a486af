"""A run's life through the real CLI: the last checkpoint of a finished run is its final state whatever the checkpoint
cadence; --force applies what it records or refuses what it cannot apply; Ctrl-C and SIGTERM end with a resume hint
(exit 130 / 143); a run directory is locked while a process trains in it; metrics.csv holds each step once; damaged
files and impossible settings cost one line."""

import collections
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from ssdistill import distill
from ssdistill.cli import main

from integration.common import tiny_config
from integration.test_distill import Interrupt
from integration.test_exact_resume import Record


def _cli(capsys, *argv):
    """(exit code, stdout, stderr lines) of ``ssdistill ARGV`` run in-process."""
    code = 0
    try:
        main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def _one_error(code, err, fragment):
    errors = [line for line in err if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and fragment in errors[0], err
    assert not any("Traceback" in line for line in err), err
    return errors[0]


def _weights(path):
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("student.")}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _cells(run_dir):
    """Every logged (step, metric) of metrics.csv with how often it appears."""
    found = collections.Counter()
    for row in csv.DictReader((run_dir / "metrics.csv").open()):
        found.update((row["step"], key) for key, value in row.items() if value not in ("", None) and key not in ("step", "epoch"))
    return found


def _recipe(tmp_path, **updates):
    config = tiny_config(tmp_path, **updates)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "recipe.yaml"


def test_a_finished_run_with_step_checkpoints_ends_with_its_final_state(tmp_path, capsys):
    """checkpoint_every_n_steps=3 with 4 steps an epoch: the step checkpoints and the epoch checkpoints share last.ckpt
    (it used to stay at step 6 while the final state went to last-v1.ckpt): eval scores the final student, export takes
    it, and a damaged last.ckpt or an older version's last-v1.ckpt still gives the final student."""
    recipe = _recipe(tmp_path, trainer={"epochs": 2, "checkpoint_every_n_steps": 3})
    assert _cli(capsys, "distill", "--config", recipe)[0] == 0
    run = tmp_path / "runs" / "tiny"
    results = json.loads((run / "results.json").read_text())
    folder = run / "checkpoints"
    assert sorted(p.name for p in folder.glob("*.ckpt")) == ["epoch000.ckpt", "epoch001.ckpt", "last.ckpt"]
    assert torch.load(folder / "last.ckpt", weights_only=False)["global_step"] == results["steps"] == 8
    assert _same(_weights(folder / "last.ckpt"), _weights(folder / "epoch001.ckpt"))  # the end of the last epoch

    def knn_of_eval():
        code, out, err = _cli(capsys, "eval", run, "--knn-only", "--json", "--num-workers", 0)
        assert code == 0, err
        return json.loads(out)["knn"]["student"]["top1"], err

    assert knn_of_eval()[0] == results["knn"]["student"]["top1"]
    code, out, err = _cli(capsys, "export", run)
    assert code == 0 and "model.safetensors" in out, err

    final = (folder / "last.ckpt").read_bytes()
    (folder / "last.ckpt").write_bytes(final[: len(final) // 2])  # a damaged disk
    top1, err = knn_of_eval()
    assert top1 == results["knn"]["student"]["top1"]
    assert any(line.startswith(f"WARNING: checkpoint {folder / 'last.ckpt'} cannot be read") for line in err), err
    assert f"WARNING: using epoch001.ckpt (step 8), the newest readable checkpoint of {run}" in err
    assert _cli(capsys, "export", run, "--output", tmp_path / "export2")[0] == 0

    # a run written by an older version: the final state in last-v1.ckpt beside an older last.ckpt
    shutil.copy(folder / "epoch000.ckpt", folder / "last.ckpt")
    (folder / "last-v1.ckpt").write_bytes(final)
    assert knn_of_eval()[0] == results["knn"]["student"]["top1"]

    # an evaluation of an earlier checkpoint is not shown as the run's
    assert _cli(capsys, "eval", run, "--knn-only", "--num-workers", 0, "--checkpoint", folder / "epoch000.ckpt")[0] == 0
    code, _, err = _cli(capsys, "report", run, "--markdown")
    assert code == 0 and f"WARNING: {run / 'evaluation.json'} evaluated the checkpoint of step 4, not the final one (step 8)" in err[0], err


def _killed(tmp_path, name, epochs=3, at=1, **trainer):
    config = tiny_config(tmp_path, trainer={"epochs": epochs, "log_every_n_steps": 1, **trainer})
    config["run"]["name"] = name
    with pytest.raises(RuntimeError, match="simulated kill"):
        distill(config, callbacks=[Interrupt(at=at)], quiet=True)
    return tmp_path / "runs" / name


def test_force_applies_a_changed_learning_rate_from_the_resumed_step(tmp_path, capsys):
    run = _killed(tmp_path, "plain")
    shutil.copytree(run, tmp_path / "runs" / "forced")
    forced = tmp_path / "runs" / "forced"
    assert _cli(capsys, "distill", "--resume", run)[0] == 0
    code, _, err = _cli(capsys, "distill", "--resume", forced, "--force", "optim.lr=0.2")
    assert code == 0, err
    assert json.loads((forced / "results.json").read_text())["resumed_with_changes"] == ["optim.lr: 0.05 -> 0.2"]
    assert yaml.safe_load((forced / "config.yaml").read_text())["optim"]["lr"] == 0.2
    assert not _same(_weights(run / "checkpoints" / "last.ckpt"), _weights(forced / "checkpoints" / "last.ckpt"))

    def lrs(run_dir):
        return {int(r["step"]): float(r["train/lr"]) for r in csv.DictReader((run_dir / "metrics.csv").open()) if r.get("train/lr")}

    plain, changed = lrs(run), lrs(forced)
    assert plain.keys() == changed.keys() == set(range(12))
    assert all(changed[s] == plain[s] for s in range(4))  # the first attempt's steps, before the change
    assert all(changed[s] == pytest.approx(4 * plain[s], rel=1e-5) for s in range(4, 12) if plain[s] > 0)


@pytest.mark.parametrize(
    "change, fragment",
    [
        (["student.arch=resnet10t"], "--force cannot apply student.arch: 'test_resnet' -> 'resnet10t'"),
        (["student.resolution=48"], "--force cannot apply student.resolution: 32 -> 48"),
        (["method.projector_hidden=[64]"], "does not fit the resumed config"),  # found when the checkpoint is restored
    ],
    ids=["student.arch", "student.resolution", "method.projector_hidden"],
)
def test_force_refuses_what_it_cannot_apply_and_leaves_the_config(tmp_path, capsys, change, fragment):
    run = _killed(tmp_path, "tiny", epochs=2)
    before = {name: (run / name).read_bytes() for name in ("config.yaml", "metrics.csv")}
    checkpoint = (run / "checkpoints" / "last.ckpt").read_bytes()
    code, _, err = _cli(capsys, "distill", "--resume", run, "--force", *change)
    _one_error(code, err, fragment)
    assert (run / "config.yaml").read_bytes() == before["config.yaml"]
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == checkpoint and not (run / "results.json").exists()
    assert _cells(run) == collections.Counter(
        (r["step"], k)
        for r in csv.DictReader(iter(before["metrics.csv"].decode().splitlines()))
        for k, v in r.items()
        if v and k not in ("step", "epoch")
    )


def test_a_resume_logs_every_step_once(tmp_path, capsys):
    """Killed at step 7, one step after the step-6 checkpoint (the step-6 batch was logged under step 6): the resumed run
    logs step 6 again, and metrics.csv holds it once, exactly the cells of an uninterrupted run."""
    base = tiny_config(tmp_path, trainer={"epochs": 3, "checkpoint_every_n_steps": 2, "log_every_n_steps": 1})
    distill({**base, "run": {**base["run"], "name": "whole"}}, quiet=True)
    with pytest.raises(RuntimeError, match="simulated kill"):
        distill({**base, "run": {**base["run"], "name": "killed"}}, callbacks=[Record(kill_at=7)], quiet=True)
    killed = tmp_path / "runs" / "killed"
    config = (killed / "config.yaml").read_bytes()
    code, _, err = _cli(capsys, "distill", "--resume", killed, "--force", "data.batch_size=8")  # the epoch's position is by batch
    _one_error(code, err, f"--force cannot apply data.batch_size: 16 -> 8 to {killed} from its mid-epoch checkpoint (step 6)")
    assert (killed / "config.yaml").read_bytes() == config
    assert _cli(capsys, "distill", "--resume", killed)[0] == 0
    whole = _cells(tmp_path / "runs" / "whole")
    assert max(whole.values()) == 1 and _cells(killed) == whole


def test_a_resumed_run_logs_under_the_global_step_whatever_logging_step_the_checkpoint_restores(tmp_path):
    """The rare case of a checkpoint whose restored logging step (Lightning's count of batches that stepped) comes back
    one behind its global step: the resumed run still logs each step once, the cells of an uninterrupted run."""
    base = tiny_config(tmp_path, trainer={"epochs": 2, "checkpoint_every_n_steps": 2, "log_every_n_steps": 1})
    distill({**base, "run": {**base["run"], "name": "whole"}}, quiet=True)
    with pytest.raises(RuntimeError, match="simulated kill"):
        distill({**base, "run": {**base["run"], "name": "killed"}}, callbacks=[Record(kill_at=7)], quiet=True)
    killed = tmp_path / "runs" / "killed"
    path = killed / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]
    assert checkpoint["global_step"] == 6 and state["_batches_that_stepped"] == 5  # Lightning adds the batch on restore
    state["_batches_that_stepped"] = 4  # what it restored to 5 instead of 6 in the flaky SIGTERM / Ctrl-C case
    torch.save(checkpoint, path)
    distill(resume=killed, quiet=True)
    whole = _cells(tmp_path / "runs" / "whole")
    assert max(whole.values()) == 1 and _cells(killed) == whole


def _wait(condition, process, seconds=240):
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, f"the run ended first: {process.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _step(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=True)["global_step"]
    except Exception:  # noqa: BLE001 - being replaced
        return -1


def test_sigterm_and_ctrl_c_end_with_a_resume_hint_and_a_locked_run_refuses_others(tmp_path, capsys):
    """Real processes resuming a run: while one trains, a second resume, export and report are refused in one line
    naming it and eval warns; SIGTERM stops it after the batch with last.ckpt saved at that step (exit 143), Ctrl-C
    with its last checkpoint (exit 130), each with a one-line resume hint; the run then resumes to the very student an
    uninterrupted run reaches, with each step once in metrics.csv."""
    # 50 batches an epoch, a step checkpoint every 40: a SIGTERM between two of them saves a step of its own
    config = tiny_config(
        tmp_path, trainer={"epochs": 4, "log_every_n_steps": 1, "checkpoint_every_n_steps": 40}, data={"train_subset": 800, "num_workers": 2}
    )
    distill({**config, "run": {**config["run"], "name": "whole"}}, quiet=True)
    run = tmp_path / "runs" / "tiny"
    with pytest.raises(RuntimeError, match="simulated kill"):
        distill(config, callbacks=[Interrupt(at=1)], quiet=True)  # last.ckpt at step 50
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    resume = [sys.executable, "-m", "ssdistill", "distill", "--resume", str(run)]

    def start():
        # signals as a terminal or a scheduler deliver them, to the whole process group (the data-loading workers too);
        # SIGINT restored (a test run started in the background has it ignored, and children inherit that)
        return subprocess.Popen(
            resume,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

    def said(process):
        err = [line for line in process.communicate(timeout=120)[1].splitlines() if line.strip()]
        return [line for line in err if not line.lower().startswith("warning")]  # the k-NN memory's small classes

    trains = start()
    _wait(lambda: _step(run / "checkpoints" / "last.ckpt") >= 80, trains)  # training: its first step checkpoint
    time.sleep(0.2)
    trains.send_signal(signal.SIGSTOP)  # held still (and its lock held) while the others try the run
    held = f"{run} is being trained by process {trains.pid}"
    _one_error(*_cli(capsys, "distill", "--resume", run)[::2], f"{held}; wait for it to end (or stop it) before resuming the run")
    _one_error(*_cli(capsys, "export", run)[::2], f"{held}: export it once it has finished")
    _one_error(*_cli(capsys, "report", run)[::2], f"{held}: its report can be made once it has finished")
    code, _, err = _cli(capsys, "eval", run, "--knn-only", "--num-workers", 0)
    assert code == 0 and any(line.startswith(f"WARNING: {held}: evaluating its checkpoint of step") for line in err), err

    trains.send_signal(signal.SIGCONT)
    time.sleep(0.3)  # a few batches past the step checkpoint, so that the save on SIGTERM is usually a step of its own
    os.killpg(trains.pid, signal.SIGTERM)
    err = said(trains)
    assert trains.returncode == 143 and len(err) == 1, err
    step = _step(run / "checkpoints" / "last.ckpt")
    at = int(err[0].split(" at step ")[1].split(";")[0])
    # saved at the batch it stopped after (engine/trainer.py sigterm_noted holds Lightning's stop back until the save), so
    # the checkpoint is the step it stopped at; the line names both, whatever they are
    assert 80 <= step <= at < 200, err
    assert err == [f"interrupted: SIGTERM at step {at}; {run} resumes from its checkpoint of step {step}: ssdistill distill --resume {run}"]
    assert not (run / "results.json").exists() and max(_cells(run).values()) == 1

    interrupted = start()
    _wait(lambda: _step(run / "checkpoints" / "last.ckpt") > step, interrupted)
    os.killpg(interrupted.pid, signal.SIGINT)
    err = said(interrupted)
    assert interrupted.returncode == 130 and len(err) == 1, err
    kept = _step(run / "checkpoints" / "last.ckpt")
    at = int(err[0].split(" at step ")[1].split(";")[0])
    assert kept <= at and err == [
        f"interrupted: Ctrl-C at step {at}; {run} resumes from its checkpoint of step {kept}: ssdistill distill --resume {run}"
    ]

    assert _cli(capsys, "distill", "--resume", run)[0] == 0
    assert _same(_weights(run / "checkpoints" / "last.ckpt"), _weights(tmp_path / "runs" / "whole" / "checkpoints" / "last.ckpt"))
    assert _cells(run) == _cells(tmp_path / "runs" / "whole")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A recipe and a finished one-epoch run of it (copied by each case that damages it)."""
    folder = tmp_path_factory.mktemp("finished")
    recipe = _recipe(folder, trainer={"epochs": 1})
    distill(yaml.safe_load(recipe.read_text()), quiet=True)
    return recipe, folder / "runs" / "tiny"


def _damaged_results(run):
    text = (run / "results.json").read_text()
    (run / "results.json").write_text(text[: len(text) // 2])


def _older_results(run):
    record = json.loads((run / "results.json").read_text())
    record["results_version"] = 1
    (run / "results.json").write_text(json.dumps(record))


def _damaged_checkpoints(run):
    for path in (run / "checkpoints").glob("*.ckpt"):
        path.write_bytes(b"damaged")


BAD = [  # (case, damage done to a copy of the finished run, arguments ({r}: the run, {c}: the recipe), message fragment)
    (
        "batch-size-1-with-BatchNorm",
        None,
        ["distill", "--config", "{c}", "data.batch_size=1"],
        "data.batch_size=1 cannot train this run: it has BatchNorm layers (BatchNorm2d), whose statistics need at least 2 images",
    ),
    (
        "fewer-images-than-a-batch-per-DDP-process",
        None,
        ["distill", "--config", "{c}", "trainer.devices=8", "trainer.accelerator=cpu"],
        "has 64 images, fewer than data.batch_size=16 for each of its 8 processes; lower the batch size",
    ),
    (
        "run.name-with-a-slash",
        None,
        ["distill", "--config", "{c}", "run.name=a/b"],
        "invalid value for 'run.name': run.name must be a plain folder name, not a path: put the parent folders in run.dir (got 'a/b')",
    ),
    ("report-of-a-truncated-results.json", _damaged_results, ["report", "{r}"], "{r}/results.json is damaged (not valid JSON"),
    (
        "report-of-an-older-results.json",
        _older_results,
        ["report", "{r}"],
        "{r}/results.json was written by an older ssdistill (results_version 1, this one reads 2)",
    ),
    ("eval-without-a-readable-checkpoint", _damaged_checkpoints, ["eval", "{r}", "--knn-only"], "no checkpoint in {r}/checkpoints can be read"),
    ("export-without-a-readable-checkpoint", _damaged_checkpoints, ["export", "{r}"], "no checkpoint in {r}/checkpoints can be read"),
    (
        "eval-of-a-damaged---checkpoint",
        _damaged_checkpoints,
        ["eval", "{r}", "--checkpoint", "{r}/checkpoints/epoch000.ckpt"],
        "checkpoint {r}/checkpoints/epoch000.ckpt cannot be read",
    ),
]


@pytest.mark.parametrize("case, damage, arguments, fragment", BAD, ids=[case for case, *_ in BAD])
def test_lifecycle_bad_input_is_one_line(finished, tmp_path, capsys, case, damage, arguments, fragment):
    recipe, original = finished
    run = tmp_path / "runs" / "tiny"
    shutil.copytree(original, run)
    if damage is not None:
        damage(run)
    code, _, err = _cli(capsys, *[a.format(r=run, c=recipe) for a in arguments])
    _one_error(code, err, fragment.format(r=run))
    assert not (recipe.parent / "runs" / "a").exists() and sorted(p.name for p in (recipe.parent / "runs").iterdir()) == ["tiny"]


def test_ctrl_c_during_the_evaluation_names_the_run_and_the_resume_evaluates_it(tmp_path, capsys, monkeypatch):
    import ssdistill.runs.train as engine_run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    recipe = _recipe(tmp_path, trainer={"epochs": 1})
    evaluate_run = engine_run.evaluate_run
    monkeypatch.setattr(engine_run, "evaluate_run", interrupted)
    code, _, err = _cli(capsys, "distill", "--config", recipe)
    run = tmp_path / "runs" / "tiny"
    assert code == 130 and [line for line in err if line.startswith("interrupted")] == [
        f"interrupted: Ctrl-C outside training (teacher signals or evaluation); {run} resumes from its checkpoint of step 4: "
        f"ssdistill distill --resume {run}"
    ], err
    monkeypatch.setattr(engine_run, "evaluate_run", evaluate_run)
    config = (run / "config.yaml").read_text()
    code, _, err = _cli(capsys, "distill", "--resume", run, "eval.knn_k=5")  # nothing left to train: evaluated
    assert code == 0 and json.loads((run / "results.json").read_text())["steps"] == 4, err
    assert (run / "config.yaml").read_text() != config and "knn_k: 5" in (run / "config.yaml").read_text()


def test_a_sigterm_while_training_sets_up_stops_before_the_first_batch(tmp_path):
    """Before Lightning's own SIGTERM handler is in place (checkpoint restore, setup) the signal is noted and training
    stops before its first batch; a new run without a checkpoint leaves nothing behind."""
    import lightning as L

    from ssdistill.errors import Interrupted

    class Preempted(L.Callback):
        def on_fit_start(self, trainer, module):
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Interrupted) as stopped:
        distill(tiny_config(tmp_path), callbacks=[Preempted()], quiet=True)
    run = tmp_path / "runs" / "tiny"
    assert stopped.value.exit_code == 143
    assert str(stopped.value) == f"SIGTERM at step 0, before the first checkpoint of {run}: nothing to resume; start the run again"
    assert not run.exists()


def test_an_error_while_a_resume_restores_its_checkpoint_is_not_called_a_config_mismatch(finished, tmp_path):
    """Only a checkpoint that does not fit the resumed module is the user's config (one line); an out-of-memory, a
    process group that cannot start or a bug while the checkpoint is restored is raised as it is."""
    import lightning as L

    class OutOfMemory(L.Callback):
        def on_load_checkpoint(self, trainer, module, checkpoint):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    run = tmp_path / "runs" / "tiny"
    shutil.copytree(finished[1], run)
    config = (run / "config.yaml").read_bytes()
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        distill(resume=run, trainer={"epochs": 2}, callbacks=[OutOfMemory()], quiet=True)
    assert (run / "config.yaml").read_bytes() == config


def test_a_sigterm_after_the_last_batch_stops_the_run_before_its_evaluation(tmp_path):
    """A SIGTERM while Lightning tears down (its own handler gone, the run's flag-only one back) still stops the run,
    with its resume hint, instead of being dropped while the run evaluates and exits 0."""
    import lightning as L

    from ssdistill.errors import Interrupted

    class PreemptedAtTheEnd(L.Callback):
        def on_fit_end(self, trainer, module):  # after Lightning's teardown put the handlers back
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Interrupted) as stopped:
        distill(tiny_config(tmp_path, trainer={"epochs": 1}), callbacks=[PreemptedAtTheEnd()], quiet=True)
    run = tmp_path / "runs" / "tiny"
    assert stopped.value.exit_code == 143 and not (run / "results.json").exists()
    assert str(stopped.value) == f"SIGTERM after training; {run} resumes from its checkpoint of step 4: ssdistill distill --resume {run}"


def test_a_file_system_without_locks_lets_the_run_be_reported(finished, tmp_path, capsys, caplog, monkeypatch):
    """flock refused with ENOLCK (some network and FUSE mounts): training goes on unlocked with a warning, and the
    commands that ask whether a process trains the run (report, eval, export) find none instead of failing."""
    import errno

    import ssdistill.engine.rundir as rundir

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    run = tmp_path / "runs" / "tiny"
    shutil.copytree(finished[1], run)
    (run / rundir.LOCK_FILE).touch()
    monkeypatch.setattr(rundir.fcntl, "flock", no_locks)
    code, out, err = _cli(capsys, "report", run, "--markdown")
    assert code == 0 and "distilled test_resnet" in out and not err, err
    rundir.lock_run(run)
    rundir.unlock_run(run)
    assert [r.getMessage() for r in caplog.records if r.name == "ssdistill"] == [
        f"{run} cannot be locked ({os.strerror(errno.ENOLCK)}): a second process training this run at the same time would not be refused"
    ]


def test_devices_auto_counts_every_gpu_as_lightning_does(finished, tmp_path, capsys, monkeypatch):
    """trainer.devices=auto starts a process per visible GPU: the check of one batch per process counts them all (it
    counted one), on the CPU and with trainer.accelerator=cpu one process."""
    from ssdistill.distributed import process_count

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    assert [process_count("auto", 1, a) for a in ("auto", "gpu", "cuda", "cpu", "mps")] == [8, 8, 8, 1, 1]
    assert process_count("auto", 2, "auto") == 16 and process_count(3, 2, "auto") == 6
    recipe = finished[0]
    code, _, err = _cli(capsys, "distill", "--config", recipe, "trainer.devices=auto", "run.name=auto")
    _one_error(code, err, "has 64 images, fewer than data.batch_size=16 for each of its 8 processes; lower the batch size")
    assert not (recipe.parent / "runs" / "auto").exists()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert process_count("auto", 1, "auto") == 1


def test_warnings_and_the_interrupted_line_come_from_the_first_process_only(finished, tmp_path, capsys, monkeypatch):
    """Warnings go through the package logger ("WARNING: ..."), and they, like the plain Ctrl-C line, are shown by the
    first process of a launch only, not once per DDP process."""
    import ssdistill.cli as cli

    run = tmp_path / "runs" / "tiny"
    shutil.copytree(finished[1], run)
    (run / "evaluation.json").write_text(json.dumps({"step": 1, "knn": {}}))
    warned = f"WARNING: {run / 'evaluation.json'} evaluated the checkpoint of step 1, not the final one (step 4)"

    def stopped():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_print_list", stopped)
    code, _, err = _cli(capsys, "report", run, "--markdown")
    assert code == 0 and len(err) == 1 and err[0].startswith(warned), err
    assert _cli(capsys, "list") == (130, "", ["interrupted: a run resumes with `ssdistill distill --resume RUN_DIR`, a cache fill where it stopped"])
    monkeypatch.setenv("LOCAL_RANK", "1")  # a process Lightning started for the second device
    assert _cli(capsys, "report", run, "--markdown")[::2] == (0, [])
    assert _cli(capsys, "list") == (130, "", [])
