"""Experiment trackers through Lightning's real loggers: what a run writes is read back with each tracker's own reader
(TensorBoard's event accumulator, MLflow's client)."""

import json

import pytest

from integration.common import tiny_config
from ssdistill import distill
from ssdistill.errors import ConfigError
from ssdistill.recipe import build_config


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("trackers")
    config = tiny_config(
        tmp_path, trainer={"epochs": 2, "log_every_n_steps": 1}, eval={"teacher": True, "random_init": True, "suite": "full"},
        run={"dir": str(tmp_path / "runs"), "name": "tracked", "loggers": ["csv", "tensorboard", "mlflow"]},
    )
    results = distill(config, quiet=True)
    return tmp_path / "runs" / "tracked", results


def test_tensorboard_events_hold_the_loss_curve_the_config_and_the_final_evaluation(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, results = tracked_run
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    scalars = events.Tags()["scalars"]
    loss = events.Scalars("train/loss_step")
    assert len(loss) == results["steps"] and [e.step for e in loss] == list(range(results["steps"]))
    assert events.Scalars("final/student/knn_top1")[0].value == pytest.approx(results["knn"]["student"]["top1"])
    assert events.Scalars("final/student/linear")[0].value == pytest.approx(results["evaluation"]["models"]["student"]["linear"]["top1"])
    assert "final/teacher/knn_top1" in scalars and "final/random_init/knn_top1" in scalars
    # the config as TensorBoard hparams (its plugin's session-start record)
    from tensorboard.plugins.hparams import plugin_data_pb2

    tagged = EventAccumulator(str(run / "tensorboard")).Reload().PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(tagged["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["optim.lr"].number_value == pytest.approx(0.05) and start.hparams["method.name"].string_value == "feature"


def test_mlflow_run_holds_the_loss_curve_the_config_as_params_and_the_final_evaluation(tracked_run):
    import mlflow

    run, results = tracked_run
    ids = json.loads((run / "trackers.json").read_text())
    client = mlflow.tracking.MlflowClient(f"sqlite:///{run.parent / 'mlflow.db'}")
    record = client.get_run(ids["mlflow"])
    assert record.info.run_name == "tracked" and record.info.status == "FINISHED"
    assert client.get_experiment(record.info.experiment_id).name == "ssdistill"
    assert record.data.params["optim.lr"] == "0.05" and record.data.params["method.name"] == "feature"
    assert record.data.params["run.loggers"] == '["csv", "tensorboard", "mlflow"]'
    history = client.get_metric_history(ids["mlflow"], "train/loss_step")
    assert len(history) == results["steps"]
    assert record.data.metrics["final/student/knn_top1"] == pytest.approx(results["knn"]["student"]["top1"])
    assert record.data.metrics["final/student/linear"] == pytest.approx(results["evaluation"]["models"]["student"]["linear"]["top1"])
    assert record.data.metrics["final/retained_pct"] == pytest.approx(results["retained_pct"])


def test_a_resumed_run_logs_into_the_same_mlflow_run(tmp_path):
    import mlflow

    config = tiny_config(tmp_path, trainer={"epochs": 2, "log_every_n_steps": 1}, run={"dir": str(tmp_path / "runs"), "name": "tracked", "loggers": ["mlflow"]})
    results = distill(config, quiet=True)
    run = tmp_path / "runs" / "tracked"
    ids = json.loads((run / "trackers.json").read_text())
    distill(resume=run, overrides={"trainer": {"epochs": 3}}, quiet=True)
    client = mlflow.tracking.MlflowClient(f"sqlite:///{run.parent / 'mlflow.db'}")
    assert json.loads((run / "trackers.json").read_text()) == ids
    record = client.get_run(ids["mlflow"])
    assert record.data.params["trainer.epochs"] == "2" and record.data.tags["resumed.trainer.epochs"] == "3"
    assert len(client.search_runs([client.get_run(ids["mlflow"]).info.experiment_id])) == 1
    steps = [m.step for m in client.get_metric_history(ids["mlflow"], "train/loss_step")]
    assert steps == list(range(len(steps))) and len(steps) == results["steps"] * 3 // 2


def test_trackers_section_is_checked_and_old_trainer_loggers_still_load(tmp_path):
    with pytest.raises(ConfigError, match="run.loggers"):
        build_config(overrides={"run": {"loggers": ["neptune"]}})
    old = build_config(overrides={"trainer": {"loggers": ["tensorboard"]}})  # the key before 0.2: run dirs written then
    assert old.run.loggers == ["tensorboard"] and "loggers" not in old.trainer.model_dump()


def test_a_tracker_without_its_package_is_refused_before_training(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"run.loggers: wandb needs the wandb package: pip install 'ssdistill\[loggers\]'"):
        distill(tiny_config(tmp_path, run={"dir": str(tmp_path / "runs"), "name": "w", "loggers": ["wandb"]}), quiet=True)
    assert not (tmp_path / "runs" / "w").exists()  # a failed start leaves no run directory


def test_weights_and_biases_runs_offline_and_records_the_config_and_the_final_evaluation(tmp_path, monkeypatch):
    """W&B without an account or network (WANDB_MODE=offline): one finished offline run whose record log (what
    `wandb sync` uploads later; protobuf records, so its keys and text values are readable bytes) holds the config,
    the loss and the final k-NN. W&B is an optional extra: this test needs it installed."""
    pytest.importorskip("wandb", reason="W&B is an optional extra (pip install 'ssdistill[loggers]')")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = tiny_config(tmp_path, trainer={"epochs": 1, "log_every_n_steps": 1}, run={"dir": str(tmp_path / "runs"), "name": "wb", "loggers": ["wandb"]})
    distill(config, quiet=True)
    # the W&B service process writes and closes the record log after run.finish() returns (finish only informs it):
    # stopping the service waits for that; a loaded machine read the file with its header alone
    import wandb

    wandb.teardown()
    run = tmp_path / "runs" / "wb"
    offline = sorted((run / "wandb").glob("offline-run-*"))
    run_id = json.loads((run / "trackers.json").read_text())["wandb"]
    assert len(offline) == 1 and offline[0].name.endswith(run_id)
    record = (offline[0] / f"run-{run_id}.wandb").read_bytes()
    for key in (b"optim.lr", b"method.name", b"train/loss_step", b"final/student/knn_top1"):
        assert key in record, key
