"""``run.loggers`` with settings: the one form the schema keeps, what goes to each Lightning logger (ssdistill's defaults,
the user's settings winning), and every refusal as the one line the user sees, before anything trains."""

import json
import os
from pathlib import Path

import pytest
import yaml

from ssdistill import distill
from ssdistill.cli import main
from ssdistill.engine.resume import config_changes
from ssdistill.engine.trackers import build_logger, check_trackers, config_params, logger_arguments, valid_settings
from ssdistill.errors import ConfigError
from ssdistill.recipe import build_config

from conftest import REPO
from integration.common import tiny_config


def trackers(loggers, **run):
    return build_config(overrides={"run": {"loggers": loggers, **run}})


def test_names_mappings_and_mixed_lists_are_one_form():
    expected = {"tensorboard": {}, "mlflow": {"tags": {"team": "vision"}}}
    assert trackers(["tensorboard", {"mlflow": {"tags": {"team": "vision"}}}]).run.loggers == expected
    assert trackers({"tensorboard": None, "mlflow": {"tags": {"team": "vision"}}}).run.loggers == expected  # `tensorboard:` in YAML
    assert trackers(["mlflow", {"mlflow": {"tags": {"team": "vision"}}}, "tensorboard", "mlflow"]).run.loggers == {
        "mlflow": {"tags": {"team": "vision"}},
        "tensorboard": {},
    }  # a name again adds nothing
    assert trackers("wandb").run.loggers == {"wandb": {}}  # run.loggers=wandb on the command line
    assert trackers(None).run.loggers == {} == build_config().run.loggers
    assert trackers(["csv", "wandb"]).run.tracker_names() == ["wandb"]


def test_a_run_written_with_the_list_form_resumes_with_the_same_config():
    """Run directories written before the mapping form: their config.yaml reads back to the config of today's form, so
    that a resume sees no change."""
    old = trackers(["csv", "tensorboard", "mlflow"])
    new = trackers({"csv": {}, "tensorboard": {}, "mlflow": {}})
    assert old == new and config_changes(old, new) == {}
    assert build_config(old.to_dict()) == old


def test_settings_are_parameters_of_the_run():
    params = config_params(trackers({"mlflow": {"tags": {"team": "vision"}}, "tensorboard": {}}))
    assert params["run.loggers.mlflow.tags.team"] == "vision" and params["run.loggers.tensorboard"] == "{}"


@pytest.mark.parametrize(
    "loggers, message",
    [
        (
            ["neptune"],
            "invalid value for 'run.loggers': unknown tracker 'neptune'; the trackers are csv, tensorboard, mlflow, wandb (got ['neptune'])",
        ),
        (3, "invalid value for 'run.loggers': expected tracker names or a mapping {name: {settings}}, for example [tensorboard, mlflow] (got 3)"),
        (
            {"mlflow": ["team"]},
            "invalid value for 'run.loggers': the settings of tracker mlflow must be a mapping {setting: value} (got {'mlflow': ['team']})",
        ),
        (
            [{"mlflow": {"tags": {"a": 1}}}, {"mlflow": {"run_name": "x"}}],
            "invalid value for 'run.loggers': tracker mlflow is given settings twice; give its settings once "
            "(got [{'mlflow': {'tags': {'a': 1}}}, {'mlflow': {'run_name': 'x'}}])",
        ),
        (
            {"csv": {"flush_logs_every_n_steps": 10}},
            "invalid value for 'run.loggers': the csv tracker takes no settings "
            "(metrics.csv is written by ssdistill itself) (got {'csv': {'flush_logs_every_n_steps': 10}})",
        ),
        (
            [{"mlflow": {}, "wandb": {}}],
            "invalid value for 'run.loggers': each item is a tracker name or {name: {settings}}, for "
            "example [tensorboard, {mlflow: {tags: {team: vision}}}] (got [{'mlflow': {}, 'wandb': {}}])",
        ),
    ],
)
def test_a_malformed_tracker_list_is_one_line(loggers, message):
    with pytest.raises(ConfigError) as error:
        trackers(loggers)
    assert str(error.value) == message


MLFLOW_TAKES = "artifact_location, experiment_name, log_model, prefix, run_name, synchronous, tags, tracking_uri"


@pytest.mark.parametrize(
    "loggers, message",
    [
        ({"mlflow": {"tag": {"team": "vision"}}}, f"run.loggers.mlflow has no setting 'tag' (did you mean tags?); MLFlowLogger takes {MLFLOW_TAKES}"),
        (
            {"mlflow": {"run_id": "0123"}},
            "run.loggers.mlflow.run_id is set by ssdistill (ssdistill keeps the MLflow run id in "
            "RUN/trackers.json so that a resume logs into the same run); remove the setting",
        ),
        (
            {"mlflow": {"save_dir": "mlruns"}},
            "run.loggers.mlflow.save_dir is set by ssdistill (ssdistill always gives MLflow a "
            "tracking URI: set tracking_uri (or run.mlflow_uri) instead); remove the setting",
        ),
        (
            {"tensorboard": {"save_dir": "tb"}},
            "run.loggers.tensorboard.save_dir is set by ssdistill (TensorBoard's events are written to RUN/tensorboard); remove the setting",
        ),
        (
            {"tensorboard": {"log_graphs": True}},
            "run.loggers.tensorboard has no setting 'log_graphs' (did you mean log_graph?); TensorBoardLogger takes comment, "
            "default_hp_metric, filename_suffix, flush_secs, log_graph, max_queue, prefix, purge_step, sub_dir",
        ),
        (
            {"wandb": {"id": "abc"}},
            "run.loggers.wandb.id is set by ssdistill (ssdistill keeps the W&B run id in RUN/trackers.json "
            "so that a resume logs into the same run); remove the setting",
        ),
        ({"wandb": {"dir": "/tmp/wandb"}}, "run.loggers.wandb.dir is set by ssdistill (W&B's files are written to RUN/wandb); remove the setting"),
        (
            {"wandb": {"anonymous": True}},
            "run.loggers.wandb.anonymous is set by ssdistill (W&B ignores it (deprecated, it has no effect)); remove the setting",
        ),
        (
            {"wandb": {"offline": True, "log_model": True}},
            "run.loggers.wandb: log_model cannot upload checkpoints offline; drop log_model or offline",
        ),
    ],
    ids=[
        "mlflow.tag",
        "mlflow.run_id",
        "mlflow.save_dir",
        "tensorboard.save_dir",
        "tensorboard.log_graphs",
        "wandb.id",
        "wandb.dir",
        "wandb.anonymous",
        "wandb.log_model offline",
    ],
)
def test_a_setting_the_logger_does_not_take_or_ssdistill_sets_is_refused_before_the_run_starts(tmp_path, capsys, loggers, message):
    """Through the CLI: exit code 2 and the one line on stderr, before the run directory exists (and so before any
    teacher signal or training)."""
    config = tiny_config(tmp_path, run={"dir": str(tmp_path / "runs"), "name": "t", "loggers": loggers})
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as exit_code:
        main(["distill", "--config", str(tmp_path / "recipe.yaml")])
    assert exit_code.value.code == 2 and capsys.readouterr().err == f"error: {message}\n"
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ConfigError) as error:  # and through the API
        distill(config, quiet=True)
    assert str(error.value) == message


def test_a_misspelled_wandb_setting_names_the_wandb_init_arguments():
    with pytest.raises(ConfigError) as error:
        check_trackers(trackers({"wandb": {"groups": "ablation"}}))
    line = str(error.value)
    assert line.startswith("run.loggers.wandb has no setting 'groups' (did you mean group?); WandbLogger takes ")
    named = set(line.split(" takes ")[1].split(", "))
    assert {"entity", "group", "job_type", "notes", "tags", "offline", "project", "mode", "settings", "log_model"} <= named
    assert named == valid_settings("wandb") and not named & {"id", "dir", "save_dir", "resume", "anonymous"}
    assert "\n" not in line


def test_mlflow_gets_its_defaults_from_the_run_section_and_its_settings_win(tmp_path):
    run_dir = tmp_path / "runs" / "r"
    plain = logger_arguments("mlflow", trackers(["mlflow"], dir=str(tmp_path / "runs"), experiment="exp"), run_dir)
    assert plain == {
        "experiment_name": "exp",
        "run_name": "r",
        "artifact_location": (tmp_path / "runs" / "mlartifacts").as_uri(),
        "tracking_uri": f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}",
        "run_id": None,
    }
    by_section = logger_arguments("mlflow", trackers(["mlflow"], mlflow_uri=f"sqlite:///{tmp_path}/other.db"), run_dir)
    assert by_section["tracking_uri"] == f"sqlite:///{tmp_path}/other.db"
    mine = {
        "experiment_name": "mine",
        "artifact_location": "s3://bucket/mine",
        "tracking_uri": "http://127.0.0.1:5000",
        "tags": {"team": "vision"},
        "log_model": True,
    }
    given = logger_arguments("mlflow", trackers({"mlflow": mine}, mlflow_uri="sqlite:///x.db", experiment="exp"), run_dir)
    assert given == {**mine, "run_name": "r", "run_id": None}
    server = logger_arguments("mlflow", trackers(["mlflow"], mlflow_uri="https://mlflow.example.org"), run_dir)
    assert server["artifact_location"] is None  # a tracking server places artifacts itself


def test_a_users_mlflow_artifact_location_is_where_the_experiment_keeps_its_artifacts(tmp_path):
    cfg = trackers({"mlflow": {"artifact_location": str(tmp_path / "mine"), "experiment_name": "own"}}, dir=str(tmp_path / "runs"))
    logger = build_logger("mlflow", cfg, tmp_path / "runs" / "r")
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        experiment = logger.experiment.get_experiment(logger.experiment_id)
    finally:  # Lightning's MLflow logger sets the process-wide tracking URI
        import mlflow

        mlflow.set_tracking_uri(uri)
        if uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
    assert experiment.name == "own" and Path(experiment.artifact_location.removeprefix("file://")) == tmp_path / "mine"


def test_wandb_and_tensorboard_arguments(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run_dir = tmp_path / "runs" / "r"
    cfg = trackers({"wandb": {"offline": True, "group": "ablation", "entity": "team"}, "tensorboard": {"log_graph": True}}, experiment="exp")
    arguments = logger_arguments("wandb", cfg, run_dir)
    assert arguments == {
        "name": "r",
        "project": "exp",
        "mode": "offline",
        "group": "ablation",
        "entity": "team",
        "save_dir": str(run_dir),
        "id": None,
        "resume": "allow",
    }
    assert logger_arguments("wandb", trackers({"wandb": {"project": "mine"}}, experiment="exp"), run_dir)["project"] == "mine"
    logger = build_logger("wandb", cfg, run_dir)
    # what wandb.init will be given: no anonymous (wandb warns of any value), W&B's own offline mode
    assert "anonymous" not in logger._wandb_init and logger._wandb_init["mode"] == "offline"
    assert "WANDB_MODE" not in os.environ  # Lightning's offline=True would set it for the whole process
    assert logger_arguments("tensorboard", cfg, run_dir) == {
        "default_hp_metric": False,
        "log_graph": True,
        "save_dir": str(run_dir),
        "name": "tensorboard",
        "version": "",
    }


def test_files_a_tracker_cannot_take_after_the_run_are_a_warning_and_a_run_without_trackers_reads_nothing(tmp_path, caplog):
    import json
    import logging

    from ssdistill.engine.trackers import send_files
    from ssdistill.runs.load import send_to_run_trackers

    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    (run_dir / "report.html").write_text("<html></html>")
    assert send_to_run_trackers(run_dir, [run_dir / "report.html"]) == []  # no trackers.json: not even config.yaml is read
    (run_dir / "trackers.json").write_text(json.dumps({"mlflow": "0" * 32, "mlflow_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}))
    with caplog.at_level(logging.WARNING, logger="ssdistill"):
        assert send_files(trackers(["mlflow"]), run_dir, [run_dir / "report.html"], "") == []
    [record] = [r for r in caplog.records if r.name == "ssdistill"]
    assert record.getMessage().startswith(f"the mlflow run of {run_dir} did not take report.html (")


def test_the_old_trainer_loggers_key_joins_any_form_of_run_loggers():
    """``trainer.loggers`` (before 0.2) is added to ``run.loggers`` whether that is a name, a list or a mapping (a
    mapping's settings kept, a name not split into letters)."""
    from ssdistill.recipe import build_config

    demo = REPO / "configs" / "demo" / "feature.yaml"
    mapped = build_config(demo, {"trainer": {"loggers": ["tensorboard"]}, "run": {"loggers": {"mlflow": {"tags": {"a": 1}}}}})
    assert mapped.run.loggers == {"mlflow": {"tags": {"a": 1}}, "tensorboard": {}}
    named = build_config(demo, {"trainer": {"loggers": "tensorboard"}, "run": {"loggers": "mlflow"}})
    assert named.run.loggers == {"mlflow": {}, "tensorboard": {}}


def test_after_a_spawned_run_the_final_figures_join_the_recorded_mlflow_run_and_the_process_keeps_its_tracking_uri(tmp_path, monkeypatch, caplog):
    """log_final in a launching process whose training ran in spawned processes (trainer.strategy=ddp_spawn): the MLflow
    run is re-opened from trackers.json, takes the final figures, and MLflow's process-wide tracking URI (and
    $MLFLOW_TRACKING_URI) is as before; a tracker that fails there is one warning, not a traceback."""
    from types import SimpleNamespace

    import mlflow
    from mlflow.tracking import MlflowClient

    from ssdistill.engine.trackers import build_logger, log_final
    from ssdistill.recipe import build_config

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = mlflow.get_tracking_uri()
    run_dir = tmp_path / "runs" / "spawned"
    run_dir.mkdir(parents=True)
    cfg = build_config(tiny_config(tmp_path, run={"dir": str(tmp_path / "runs"), "name": "spawned", "loggers": ["mlflow"]}))
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    experiment = MlflowClient(uri).create_experiment("ssdistill", artifact_location=(tmp_path / "mlartifacts").as_uri())
    started = MlflowClient(uri).create_run(experiment).info.run_id  # what rank zero made
    (run_dir / "trackers.json").write_text(json.dumps({"mlflow": started, "mlflow_uri": uri}))
    (run_dir / "results.json").write_text("{}")
    never_started = build_logger("mlflow", build_config(tiny_config(tmp_path, run={"loggers": ["mlflow"]})), tmp_path / "elsewhere")
    trainer = SimpleNamespace(
        loggers=[never_started], is_global_zero=True, global_step=7, strategy=SimpleNamespace(_launcher=SimpleNamespace(_start_method="spawn"))
    )
    log_final(trainer, {"knn": {"student": {"top1": 41.5}}}, run_dir, cfg)
    record = MlflowClient(uri).get_run(started)
    assert record.data.metrics["final/student/knn_top1"] == 41.5 and record.info.status == "FINISHED"
    assert [a.path for a in MlflowClient(uri).list_artifacts(started)] == ["results.json"]
    assert "MLFLOW_TRACKING_URI" not in os.environ and mlflow.get_tracking_uri() == before
    assert len(MlflowClient(uri).search_runs([record.info.experiment_id])) == 1
    # a tracker that fails after training: one warning, the run goes on
    broken = SimpleNamespace(log_metrics=lambda *a, **k: (_ for _ in ()).throw(RuntimeError("server gone")))
    trainer = SimpleNamespace(
        loggers=[type("MLFlowLogger", (), {"log_metrics": broken.log_metrics})()],
        is_global_zero=True,
        global_step=7,
        strategy=SimpleNamespace(_launcher=None),
    )
    with caplog.at_level("WARNING", logger="ssdistill"):
        log_final(trainer, {"knn": {"student": {"top1": 41.5}}}, run_dir, cfg)
    assert "did not take the run's final figures and files (server gone)" in caplog.text


def test_a_resume_into_another_mlflow_store_starts_a_new_mlflow_run_there_with_a_warning(tmp_path, caplog):
    """The recorded MLflow run id belongs to the store it was made in: a resume whose run.mlflow_uri points elsewhere
    does not ask that store for a run it never held (MLflow's 'Run not found' traceback at fit start)."""
    from ssdistill.recipe import build_config

    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    (run_dir / "trackers.json").write_text(json.dumps({"mlflow": "abc123", "mlflow_uri": "sqlite:///old.db"}))
    same = build_config(tiny_config(tmp_path, run={"loggers": ["mlflow"], "mlflow_uri": "sqlite:///old.db"}))
    assert logger_arguments("mlflow", same, run_dir)["run_id"] == "abc123"
    moved = build_config(tiny_config(tmp_path, run={"loggers": ["mlflow"], "mlflow_uri": "sqlite:///new.db"}))
    with caplog.at_level("WARNING", logger="ssdistill"):
        arguments = logger_arguments("mlflow", moved, run_dir)
    assert arguments["run_id"] is None and arguments["tracking_uri"] == "sqlite:///new.db"
    assert "the MLflow store changed since r started (was sqlite:///old.db, now sqlite:///new.db)" in caplog.text


def test_a_tracking_uri_password_is_not_sent_as_a_parameter(tmp_path):
    from ssdistill.recipe import build_config

    cfg = build_config(tiny_config(tmp_path, run={"loggers": ["mlflow"], "mlflow_uri": "https://ana:s3cret@mlflow.example.org/api"}))
    params = config_params(cfg)
    assert params["run.mlflow_uri"] == "https://ana:***@mlflow.example.org/api"
    assert "s3cret" not in json.dumps(params) and params["optim.lr"] == cfg.optim.lr
