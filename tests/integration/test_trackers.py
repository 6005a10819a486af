"""Experiment trackers through Lightning's real loggers: what a run writes is read back with each tracker's own reader
(TensorBoard's event accumulator, MLflow's client, W&B's record protobufs from the offline run's transaction log).

One tiny run with all three trackers, each given settings, started from another folder than the test's, then exported
(the module-scoped ``tracked_run``); and one small run resumed into the same MLflow run."""

import contextlib
import io
import json
import os
import struct
from pathlib import Path

import pytest
import yaml

from ssdistill import distill
from ssdistill.cli import main
from ssdistill.errors import ConfigError
from ssdistill.recipe import build_config

from integration.common import tiny_config

LOGGERS = [
    "csv",
    "tensorboard",
    {"mlflow": {"tags": {"team": "vision"}}},
    {"wandb": {"offline": True, "group": "ablation", "tags": ["tiny"], "job_type": "distill"}},
]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """The run, its evaluation, report and export, from a working folder of their own (MLflow once put its artifacts in ./mlruns of the
    current folder); W&B offline (no account, no network), its terminal output kept to check what it printed."""
    pytest.importorskip("wandb", reason="W&B is an optional extra (pip install 'ssdistill[loggers]')")
    import wandb

    from ssdistill.export import export_run

    tmp_path = tmp_path_factory.mktemp("trackers")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = tiny_config(
        tmp_path,
        trainer={"epochs": 2, "log_every_n_steps": 1},
        eval={"teacher": True, "random_init": True, "suite": "full"},
        run={"dir": str(tmp_path / "runs"), "name": "tracked", "loggers": LOGGERS},
    )
    printed = io.StringIO()
    here = os.getcwd()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(printed):
        patch.setenv("WANDB_MODE", "offline")  # the offline setting says it too: no network whatever it does
        patch.delenv("WANDB_SILENT", raising=False)
        os.chdir(elsewhere)
        try:
            results = distill(config, quiet=True)
            run = tmp_path / "runs" / "tracked"
            main(["eval", str(run), "--num-workers", "0"])  # evaluation.json, then report.html: each to the trackers
            main(["report", str(run)])
            export = export_run(run)
        finally:
            os.chdir(here)
            # the W&B service process writes and closes the record log after run.finish() returns (finish only informs
            # it): stopping the service waits for that
            wandb.teardown()
    return {"run": tmp_path / "runs" / "tracked", "results": results, "printed": printed.getvalue(), "export": export, "elsewhere": elsewhere}


def test_tensorboard_events_hold_the_loss_curve_the_config_and_the_final_evaluation(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, results = tracked_run["run"], tracked_run["results"]
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    scalars = events.Tags()["scalars"]
    loss = events.Scalars("train/loss_step")
    assert len(loss) == results["steps"] and [e.step for e in loss] == list(range(results["steps"]))
    assert events.Scalars("final/student/knn_top1")[0].value == pytest.approx(results["knn"]["student"]["top1"])
    assert events.Scalars("final/student/linear")[0].value == pytest.approx(results["evaluation"]["models"]["student"]["linear"]["top1"])
    assert "final/teacher/knn_top1" in scalars and "final/random_init/knn_top1" in scalars
    # the config as TensorBoard hparams (its plugin's session-start record)
    from tensorboard.plugins.hparams import plugin_data_pb2

    tagged = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(tagged["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["optim.lr"].number_value == pytest.approx(0.05) and start.hparams["method.name"].string_value == "feature"
    assert start.hparams["run.loggers.mlflow.tags.team"].string_value == "vision"
    # the run's files (TensorBoard has no file store): the config and the record as text entries at the last step
    for name in ("config.yaml", "results.json"):
        [entry] = events.Tensors(f"run/{name}/text_summary")
        assert entry.step == results["steps"]
        assert entry.tensor_proto.string_val[0].decode() == f"```\n{(run / name).read_text()}\n```"


def test_mlflow_run_holds_the_config_the_settings_the_evaluation_and_the_run_files_under_run_dir(tracked_run):
    import mlflow

    run, results = tracked_run["run"], tracked_run["results"]
    ids = json.loads((run / "trackers.json").read_text())
    client = mlflow.tracking.MlflowClient(f"sqlite:///{run.parent / 'mlflow.db'}")
    assert ids["mlflow_uri"] == f"sqlite:///{run.parent.resolve() / 'mlflow.db'}"
    record = client.get_run(ids["mlflow"])
    assert record.info.run_name == "tracked" and record.info.status == "FINISHED"
    assert record.data.tags["team"] == "vision"  # the setting run.loggers.mlflow.tags
    experiment = client.get_experiment(record.info.experiment_id)
    assert experiment.name == "ssdistill"
    assert record.data.params["optim.lr"] == "0.05" and record.data.params["method.name"] == "feature"
    assert record.data.params["run.loggers.mlflow.tags.team"] == "vision" and record.data.params["run.loggers.tensorboard"] == "{}"
    history = client.get_metric_history(ids["mlflow"], "train/loss_step")
    assert len(history) == results["steps"]
    assert record.data.metrics["final/student/knn_top1"] == pytest.approx(results["knn"]["student"]["top1"])
    assert record.data.metrics["final/student/linear"] == pytest.approx(results["evaluation"]["models"]["student"]["linear"]["top1"])
    assert record.data.metrics["final/retained_pct"] == pytest.approx(results["retained_pct"])
    # the artifacts: the run's files, and the export (ssdistill export), in <run.dir>/mlartifacts whatever the folder
    # the run was started from
    listed = {a.path: a for a in client.list_artifacts(ids["mlflow"])}
    assert set(listed) == {"config.yaml", "results.json", "metrics.csv", "evaluation.json", "report.html", "export"} and listed["export"].is_dir
    exported = {a.path for a in client.list_artifacts(ids["mlflow"], "export")}
    assert exported == {"export/model.safetensors", "export/config.json", "export/README.md"}
    root = (run.parent.resolve() / "mlartifacts").as_uri()
    assert experiment.artifact_location == root and record.info.artifact_uri == f"{root}/{ids['mlflow']}/artifacts"
    stored = run.parent / "mlartifacts" / ids["mlflow"] / "artifacts"
    for name in ("results.json", "evaluation.json", "report.html"):
        assert (stored / name).read_bytes() == (run / name).read_bytes()
    assert list(tracked_run["elsewhere"].iterdir()) == []  # no ./mlruns (nor anything else) in the working folder
    downloaded = Path(client.download_artifacts(ids["mlflow"], "export/model.safetensors", str(run.parent / "download")))
    assert downloaded.read_bytes() == Path(tracked_run["export"]["weights"]).read_bytes()
    assert (
        client.download_artifacts(ids["mlflow"], "config.yaml", str(run.parent / "download"))
        and (run.parent / "download" / "config.yaml").read_text() == (run / "config.yaml").read_text()
    )


def _wandb_records(path: Path):
    """The records of a W&B transaction log (``run-<id>.wandb``): a LevelDB-style log (a 7-byte header, then 32 KiB
    blocks of chunks: CRC, length, type FULL/FIRST/MIDDLE/LAST) of wandb's own ``Record`` protobufs."""
    from wandb.proto import wandb_internal_pb2

    raw, block, position, pending = path.read_bytes(), 32768, 7, b""
    assert raw[:4] == b":W&B"
    while position + 7 <= len(raw):
        left = block - position % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[position : position + 7])
        pending += raw[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # FULL, LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_weights_and_biases_offline_run_holds_the_settings_config_evaluation_and_files_without_anonymous_warning(tracked_run):
    run, results = tracked_run["run"], tracked_run["results"]
    run_id = json.loads((run / "trackers.json").read_text())["wandb"]
    folders = sorted((run / "wandb").glob("offline-run-*"))
    # the run, then its evaluation, report and export, each into the same W&B run (re-opened by its id)
    # (each its own offline folder, named by its start time and the run id, with -1 and so on for the same second)
    assert len(folders) == 4 and all((f / f"run-{run_id}.wandb").is_file() for f in folders)
    # the run's files under files/ssdistill/, beside W&B's own config.yaml
    holding = {
        name: [f for f in folders if (f / "files" / "ssdistill" / name).exists()]
        for name in ("config.yaml", "evaluation.json", "report.html", "export")
    }
    assert all(len(found) == 1 for found in holding.values()) and len({found[0] for found in holding.values()}) == 4
    records = list(_wandb_records(holding["config.yaml"][0] / f"run-{run_id}.wandb"))
    [start] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (start.run_group, list(start.tags), start.job_type, start.display_name, start.project) == (
        "ablation",
        ["tiny"],
        "distill",
        "tracked",
        "ssdistill",
    )
    config = {item.key: json.loads(item.value_json) for r in records if r.WhichOneof("record_type") == "config" for item in r.config.update}
    assert config["optim.lr"] == 0.05 and config["method.name"] == "feature" and config["run.loggers.wandb.group"] == "ablation"
    summary = {
        item.key or "/".join(item.nested_key): json.loads(item.value_json)
        for r in records
        if r.WhichOneof("record_type") == "summary"
        for item in r.summary.update
    }
    assert summary["final/student/knn_top1"] == pytest.approx(results["knn"]["student"]["top1"])
    steps = [
        json.loads(item.value_json)
        for r in records
        if r.WhichOneof("record_type") == "history"
        for item in r.history.item
        if item.nested_key == ["trainer/global_step"] or item.key == "trainer/global_step"
    ]
    assert len(steps) >= results["steps"]
    saved = {f.path for r in records if r.WhichOneof("record_type") == "files" for f in r.files.files}
    assert {"ssdistill/config.yaml", "ssdistill/results.json", "ssdistill/metrics.csv"} <= saved
    for name in ("config.yaml", "results.json", "metrics.csv"):  # copies in the run (what `wandb sync` uploads)
        copy = holding["config.yaml"][0] / "files" / "ssdistill" / name
        assert not copy.is_symlink() and copy.read_bytes() == (run / name).read_bytes()
    for name in ("evaluation.json", "report.html"):
        assert (holding[name][0] / "files" / "ssdistill" / name).read_bytes() == (run / name).read_bytes()
    again = list(_wandb_records(holding["export"][0] / f"run-{run_id}.wandb"))
    assert [r.run.run_id for r in again if r.WhichOneof("record_type") == "run"] == [run_id]
    assert {"ssdistill/export/model.safetensors", "ssdistill/export/config.json", "ssdistill/export/README.md"} <= {
        f.path for r in again if r.WhichOneof("record_type") == "files" for f in r.files.files
    }
    assert (holding["export"][0] / "files" / "ssdistill" / "export" / "model.safetensors").read_bytes() == Path(
        tracked_run["export"]["weights"]
    ).read_bytes()
    # W&B spoke (the capture works) but printed no "anonymous" warning, nor counted one as printed
    from wandb.errors import term

    assert "wandb" in tracked_run["printed"] and "anonymous" not in tracked_run["printed"].lower()
    assert not [message for message in term._printed_messages if "anonymous" in message.lower()]


def test_the_config_record_shows_the_tracker_settings_and_reads_back_equal(tracked_run):
    run, results = tracked_run["run"], tracked_run["results"]
    expected = {
        "csv": {},
        "tensorboard": {},
        "mlflow": {"tags": {"team": "vision"}},
        "wandb": {"offline": True, "group": "ablation", "tags": ["tiny"], "job_type": "distill"},
    }
    assert yaml.safe_load((run / "config.yaml").read_text())["run"]["loggers"] == expected
    assert results["config"]["run"]["loggers"] == expected
    assert build_config(run / "config.yaml").run.loggers == expected == build_config(overrides={"run": {"loggers": LOGGERS}}).run.loggers


def test_a_resumed_run_logs_into_the_same_mlflow_run(tmp_path):
    import mlflow

    config = tiny_config(
        tmp_path, trainer={"epochs": 2, "log_every_n_steps": 1}, run={"dir": str(tmp_path / "runs"), "name": "tracked", "loggers": ["mlflow"]}
    )
    results = distill(config, quiet=True)
    run = tmp_path / "runs" / "tracked"
    ids = json.loads((run / "trackers.json").read_text())
    # a run directory written before run.loggers took settings: its config.yaml holds the list form
    saved = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**saved, "run": {**saved["run"], "loggers": ["mlflow"]}}))
    distill(resume=run, overrides={"trainer": {"epochs": 3}, "run": {"loggers": {"mlflow": {"tags": {"stage": "extended"}}}}}, quiet=True)
    client = mlflow.tracking.MlflowClient(f"sqlite:///{run.parent / 'mlflow.db'}")
    assert json.loads((run / "trackers.json").read_text()) == ids
    record = client.get_run(ids["mlflow"])
    assert record.data.params["trainer.epochs"] == "2" and record.data.tags["resumed.trainer.epochs"] == "3"
    assert record.data.tags["stage"] == "extended"  # a tag the resume added, on the run it continues
    assert len(client.search_runs([client.get_run(ids["mlflow"]).info.experiment_id])) == 1
    steps = [m.step for m in client.get_metric_history(ids["mlflow"], "train/loss_step")]
    assert steps == list(range(len(steps))) and len(steps) == results["steps"] * 3 // 2
    assert (
        json.loads(client.download_artifacts(ids["mlflow"], "results.json", str(tmp_path / "dl")) and (tmp_path / "dl" / "results.json").read_text())[
            "steps"
        ]
        == results["steps"] * 3 // 2
    )


def test_trackers_section_is_checked_and_old_trainer_loggers_still_load(tmp_path):
    with pytest.raises(ConfigError, match="run.loggers"):
        build_config(overrides={"run": {"loggers": ["neptune"]}})
    old = build_config(overrides={"trainer": {"loggers": ["tensorboard"]}})  # the key before 0.2: run dirs written then
    assert old.run.loggers == {"tensorboard": {}} and "loggers" not in old.trainer.model_dump()


def test_a_tracker_without_its_package_is_refused_before_training(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"run.loggers: wandb needs the wandb package: pip install 'ssdistill\[loggers\]'"):
        distill(tiny_config(tmp_path, run={"dir": str(tmp_path / "runs"), "name": "w", "loggers": ["wandb"]}), quiet=True)
    assert not (tmp_path / "runs" / "w").exists()  # a failed start leaves no run directory
