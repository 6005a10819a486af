"""Two CPU processes (gloo DDP) finish one run and see disjoint samples; they match one process with the same global
batch; an MCL cohort shares its queues across them."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from ssdistill import distill

from conftest import REPO
from integration.common import tiny_config


def test_two_process_ddp_on_cpu_gives_each_rank_disjoint_samples(tmp_path):
    config = tiny_config(
        tmp_path, trainer={"epochs": 2, "devices": 2, "accelerator": "cpu"}, eval={"random_init": True, "align_images": 16, "monitor_every": 1}
    )
    done = _ddp_run(tmp_path, config)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sync_dist" not in done.stdout + done.stderr  # the monitors say they are rank zero's; the loss is synced
    for epoch in (0, 1):
        records = [json.loads((tmp_path / f"indices-rank{r}-epoch{epoch}.json").read_text()) for r in (0, 1)]
        assert all(rec["world"] == 2 for rec in records)
        a, b = set(records[0]["indices"]), set(records[1]["indices"])
        assert len(a) == len(records[0]["indices"]) == 32 and len(b) == 32  # 64 images, batch 16, 2 steps per rank
        assert not a & b and a | b == set(range(64))
    run_dir = tmp_path / "runs" / "tiny"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["steps"] == 4 and results["knn"]["student"]["top1"] > 0
    assert not list((tmp_path / "runs").glob("tiny-*"))  # both processes wrote to one run directory


def _ddp_run(tmp_path, config):
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "SSDISTILL_RUN_DIR")}
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, str(REPO / "tests" / "integration" / "ddp_worker.py"), str(recipe), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
    )


def test_an_mcl_cohort_trains_under_ddp_with_gathered_queues_and_self_sharding_batches(tmp_path):
    """Label-free: every rank's keys reach the (one-pointer) cohort queue, so after one epoch rank 0's checkpoint holds
    a key of all 64 images in every member's queue; DDP finds no unused parameter in either mode. Supervised: the
    two-per-class sampler shards itself (Lightning's distributed sampler is off), 2 batches per rank per epoch."""
    import torch

    for mode in ("label_free", "supervised"):
        run = tmp_path / mode
        run.mkdir()
        config = tiny_config(run, trainer={"epochs": 1, "devices": 2, "accelerator": "cpu"}, run={"name": mode})
        config["method"] = {"name": "mcl", "mode": mode, "queue_size": 64}
        done = _ddp_run(run, config)
        assert done.returncode == 0, done.stderr[-3000:]
        results = json.loads((run / "runs" / mode / "results.json").read_text())
        assert results["steps"] == 2 and set(results["knn"]) == {"student", "student_peer1", "student_ensemble"}
        records = [json.loads((run / f"indices-rank{r}-epoch0.json").read_text()) for r in (0, 1)]
        assert all(len(rec["indices"]) == 32 for rec in records)
        if mode == "label_free":
            state = torch.load(run / "runs" / mode / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
            assert sorted(state["queue.ids"].tolist()) == list(range(64)) and state["queue.keys"].shape == (64, 2, 128)


def test_an_lmcl_cohort_runs_its_meta_steps_under_ddp(tmp_path):
    """The weighting network is outside DDP's reduction (the real step never gives it a gradient, which DDP would
    otherwise stop on) and its hypergradient is averaged over the processes: two processes train with a meta step
    after every step, and the weighting network moved."""
    import csv

    import torch

    config = tiny_config(tmp_path, trainer={"epochs": 1, "devices": 2, "accelerator": "cpu", "log_every_n_steps": 1}, run={"name": "lmcl"})
    config["method"] = {"name": "lmcl", "mode": "supervised", "meta_every": 1}
    config["optim"] = {"warmup_epochs": 0}
    done = _ddp_run(tmp_path, config)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "lmcl"
    results = json.loads((run / "results.json").read_text())
    assert results["steps"] == 2 and set(results["knn"]) == {"student", "student_peer1", "student_ensemble"}
    rows = [r for r in csv.DictReader(open(run / "metrics.csv")) if r.get("train/meta_step")]
    assert [r["train/meta_step"] for r in rows] == ["1.0", "1.0"] and all(float(r["train/meta_grad_norm"]) > 0 for r in rows)
    trained = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert trained["lmcl_weighting_optimizer"]["state"]  # it stepped


def test_cka_trains_under_ddp_when_a_task_is_missing_from_a_batch(tmp_path):
    """Task b holds one class (a sixth of the union), batches of 4: some batches on some process hold no image of it,
    and its head and adapter must still take part in every step (DDP would stop on unused parameters)."""
    from integration.common import cka_tasks

    config = tiny_config(
        tmp_path, trainer={"epochs": 1, "devices": 2, "accelerator": "cpu"}, run={"name": "cka"}, data={"batch_size": 4, "train_subset": 48}
    )
    config.pop("teacher")
    for section, values in cka_tasks(tmp_path).items():
        config[section] = {**config.get(section, {}), **values}
    config["method"] = cka_tasks(tmp_path)["method"]
    small = tmp_path / "tasks" / "small"
    for split in ("train", "val"):
        (small / split).mkdir(parents=True)
        first = sorted((tmp_path / "tasks" / "b" / split).iterdir())[0]
        (small / split / first.name).symlink_to(first.resolve())
    config["method"]["tasks"]["b"].update(data=str(small / "train"), val=str(small / "val"), head="kmeans", classes=2)
    done = _ddp_run(tmp_path, config)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "runs" / "cka" / "results.json").read_text())
    assert set(results["tasks"]) == {"a", "b"} and results["steps"] == 6


def _curve(run_dir, column="train/loss_step"):
    import csv

    return [float(row[column]) for row in csv.DictReader(open(run_dir / "metrics.csv")) if row.get(column)]


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    """data.batch_size is per process: 2 processes x 16 images against 1 process x 32, the same seed. Each global
    batch holds the same images (the sampler deals one permutation out to the ranks), so the logged loss (the mean over
    the processes) follows the one-process curve within what per-process BatchNorm statistics and batch centring
    change, and MoCo's queue holds the same images in the same slots, step after step."""
    import torch

    curves, queues = {}, {}
    for method in ({"name": "feature", "projector_hidden": [32]}, {"name": "moco", "out_dim": 16, "queue_size": 64}):
        for world, batch in ((1, 32), (2, 16)):
            run = tmp_path / f"{method['name']}-{world}"
            run.mkdir()
            config = tiny_config(
                run, data={"batch_size": batch}, trainer={"epochs": 2, "devices": world, "accelerator": "cpu", "log_every_n_steps": 1}
            )
            config["method"] = method
            if world == 1:
                distill(config, quiet=True)
            else:
                done = _ddp_run(run, config)
                assert done.returncode == 0, done.stderr[-3000:]
            run_dir = run / "runs" / "tiny"
            assert json.loads((run_dir / "results.json").read_text())["steps"] == 4
            curves[method["name"], world] = _curve(run_dir)
            curves[method["name"], world, "lr"] = _curve(run_dir, "train/lr")
            state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
            if "queue.ids" in state:
                queues[world] = state["queue.ids"]
    for name in ("feature", "moco"):
        # the schedule counts each process's share of the images: the same warm-up and cosine as one process
        assert curves[name, 1, "lr"] == curves[name, 2, "lr"] and len(curves[name, 1, "lr"]) == 4
        one, two = torch.tensor(curves[name, 1]), torch.tensor(curves[name, 2])
        assert len(one) == len(two) == 4
        # measured: at most 7.4 % (feature) and 8.1 % (MoCo, its first step) apart
        assert ((two - one).abs() / one.abs()).max() < 0.12, (name, one, two)
    # the last step's 32 keys fill slots 32-63 (4 steps x 32 wrap a 64-key queue twice): the same images in each
    # half, in rank order under DDP (rank 0's 16, then rank 1's) and in batch order with one process
    for half in (slice(0, 32), slice(32, 64)):
        assert sorted(queues[1][half].tolist()) == sorted(queues[2][half].tolist())


def test_ddp_spawn_with_two_cpu_processes_trains_evaluates_and_logs_without_sync_hints(tmp_path):
    """trainer.strategy=ddp_spawn: Lightning pickles the trainer, module, loader and callbacks into two new processes
    (cloudpickle carries the views' closures); the global step, the clock and the weights come back to the launching
    process, which evaluates and writes the record. DisCo logs loss terms (synced: the mean over the processes) and the
    monitors log on rank zero: Lightning prints no sync_dist hint."""
    config = tiny_config(
        tmp_path,
        trainer={"epochs": 2, "devices": 2, "accelerator": "cpu", "strategy": "ddp_spawn"},
        eval={"align_images": 16, "monitor_every": 1},
        run={"loggers": ["mlflow"]},
    )
    config["method"] = {"name": "disco", "queue_size": 64}
    done = _ddp_run(tmp_path, config)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sync_dist" not in done.stdout + done.stderr
    for epoch in (0, 1):  # each spawned process took its own half of every epoch
        a, b = (set(json.loads((tmp_path / f"indices-rank{r}-epoch{epoch}.json").read_text())["indices"]) for r in (0, 1))
        assert len(a) == len(b) == 32 and not a & b
    run_dir = tmp_path / "runs" / "tiny"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["steps"] == 4 and results["knn"]["student"]["top1"] > 0
    training = results["training"]
    assert training["strategy"] == "ddp_spawn" and training["strategy_used"] == "DDPStrategy" and training["processes"] == 2
    assert training["images_per_optimiser_step"] == 32 and results["timing"]["train_seconds"] > 0
    assert len(results["timing"]["epoch_train_seconds"]) == 2
    rows = _rows(run_dir)
    assert [r["monitor/teacher_cka"] != "" for r in rows if r.get("train/loss_epoch")] == [True, True]
    assert sum(1 for r in rows if r.get("train/contrastive_epoch")) == 2
    # the tracker: one MLflow run holds the training curves (logged by the spawned rank zero) and the final figures
    # (logged by the launching process, which re-opens that run by its id)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{run_dir.parent / 'mlflow.db'}")
    found = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(found) == 1, [r.info.run_id for r in found]
    record = found[0]
    assert record.info.run_id == json.loads((run_dir / "trackers.json").read_text())["mlflow"]
    assert record.data.metrics["final/student/knn_top1"] == pytest.approx(results["knn"]["student"]["top1"])
    assert "train/loss_epoch" in record.data.metrics and record.info.status == "FINISHED"


def _rows(run_dir):
    import csv

    return list(csv.DictReader(open(run_dir / "metrics.csv")))
