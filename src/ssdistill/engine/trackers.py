"""Experiment trackers through Lightning's own loggers (``run.loggers``): TensorBoard, MLflow, Weights & Biases.

``run.loggers`` names the trackers, each with its own settings (``{mlflow: {tags: {team: vision}}}``), which go to the
Lightning logger's constructor on top of ssdistill's defaults; the settings ssdistill itself controls (where a tracker
writes in the run directory, the run ids a resume needs) are refused, and so is a setting the logger does not take, both
before anything trains (:func:`check_trackers`).

Every tracker gets what Lightning logs during training (losses, loss terms, learning rate, the k-NN and alignment
monitors), the resolved config as its parameters when training starts, the final evaluation (k-NN, and the full suite's
linear probe and the rest when it ran) as metrics at the last step, and the run's files at the end (config.yaml,
results.json, evaluation.json, metrics.csv, report.html: MLflow artifacts, W&B run files, TensorBoard text entries of
the config and results). ``ssdistill export`` sends the exported student to the run's MLflow and W&B runs
(:func:`send_files`). A tracker's run id is kept in the run directory (``trackers.json``) so that a resumed run goes on
logging into the same tracker run, and an export reaches it. CSV (``metrics.csv``) is always written, whatever the list
says. Documented in docs/trackers.md.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger, Logger

from ssdistill.config import DistillConfig
from ssdistill.engine.resume import flatten
from ssdistill.errors import ConfigError, short
from ssdistill.files import atomic_write_text

log = logging.getLogger("ssdistill")

IDS_FILE = "trackers.json"
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
RUN_FILES = ("config.yaml", "results.json", "evaluation.json", "metrics.csv", "report.html")  # sent when present
REMOTE_MLFLOW = ("http:", "https:", "databricks")  # tracking URIs of a server, which places artifacts itself

_IDS = "ssdistill keeps the {tracker} run id in RUN/trackers.json so that a resume logs into the same run"
# settings of the Lightning loggers that ssdistill sets itself: refused with the reason
RESERVED = {
    "tensorboard": dict.fromkeys(("save_dir", "name", "version", "log_dir"), "TensorBoard's events are written to RUN/tensorboard"),
    "mlflow": {
        "run_id": _IDS.format(tracker="MLflow"),
        "save_dir": "ssdistill always gives MLflow a tracking URI: set tracking_uri (or run.mlflow_uri) instead",
    },
    "wandb": {
        **dict.fromkeys(("save_dir", "dir"), "W&B's files are written to RUN/wandb"),
        **dict.fromkeys(("id", "version", "resume", "resume_from", "fork_from"), _IDS.format(tracker="W&B")),
        "experiment": "ssdistill starts the W&B run itself",
        "anonymous": "W&B ignores it (deprecated, it has no effect)",
    },
}


def _require(name: str) -> None:
    import importlib.util

    if importlib.util.find_spec(PACKAGES[name]) is None:
        raise ConfigError(f"run.loggers: {name} needs the {PACKAGES[name]} package: pip install 'ssdistill[loggers]' (or drop {name})")


def _parameters(function) -> set[str]:
    return {p.name for p in inspect.signature(function).parameters.values() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - {"self"}


def _logger_class(name: str) -> type[Logger]:
    from lightning.pytorch import loggers

    return {"tensorboard": loggers.TensorBoardLogger, "mlflow": loggers.MLFlowLogger, "wandb": loggers.WandbLogger}[name]


def valid_settings(name: str) -> set[str]:
    """The settings a tracker takes: its Lightning logger's arguments, and those of what the logger passes its other
    keyword arguments to (TensorBoard's SummaryWriter, ``wandb.init``), less the ones ssdistill sets itself."""
    accepted = _parameters(_logger_class(name).__init__)
    if name == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter

        accepted |= _parameters(SummaryWriter.__init__)
    elif name == "wandb":
        import wandb

        accepted |= _parameters(wandb.init)
    return accepted - set(RESERVED[name])


def check_trackers(cfg: DistillConfig) -> None:
    """Each tracker's package is installed and each of its settings is one its logger takes and ssdistill leaves to the
    user; one line otherwise (called before the run directory exists)."""
    for name in cfg.run.tracker_names():
        _require(name)
        settings = cfg.run.loggers[name]
        for key in settings:
            if key in RESERVED[name]:
                raise ConfigError(f"run.loggers.{name}.{key} is set by ssdistill ({RESERVED[name][key]}); remove the setting")
        valid = valid_settings(name) if settings else set()
        for key in settings:
            if key not in valid:
                close = difflib.get_close_matches(key, valid, n=1)
                raise ConfigError(
                    f"run.loggers.{name} has no setting '{key}'{f' (did you mean {close[0]}?)' if close else ''}; "
                    f"{_logger_class(name).__name__} takes {', '.join(sorted(valid))}"
                )
        if name == "wandb" and settings.get("offline") and settings.get("log_model"):
            raise ConfigError("run.loggers.wandb: log_model cannot upload checkpoints offline; drop log_model or offline")


def _saved_ids(run_dir: Path) -> dict[str, str]:
    path = run_dir / IDS_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def mlflow_uri(cfg: DistillConfig, run_dir: Path) -> str:
    """The MLflow tracking URI: run.loggers.mlflow.tracking_uri, else run.mlflow_uri, else the store the run's MLflow
    run is in (trackers.json; a resume or an export goes on there), else $MLFLOW_TRACKING_URI, else one SQLite store for
    every run of the runs folder (MLflow's plain-folder store is in maintenance mode and refused by MLflow 3 unless
    asked for)."""
    return (
        cfg.run.loggers.get("mlflow", {}).get("tracking_uri")
        or cfg.run.mlflow_uri
        or _saved_ids(run_dir).get("mlflow_uri")
        or os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{run_dir.parent.resolve() / 'mlflow.db'}"
    )


def mlflow_artifact_root(uri: str, run_dir: Path) -> str | None:
    """Where a new MLflow experiment keeps its artifacts: ``<run.dir>/mlartifacts`` for a store this process writes
    itself (MLflow's default is ``./mlruns`` of the current folder), None (the server's choice) for a tracking server."""
    return None if uri.startswith(REMOTE_MLFLOW) else (run_dir.parent.resolve() / "mlartifacts").as_uri()


def logger_arguments(name: str, cfg: DistillConfig, run_dir: Path) -> dict[str, Any]:
    """The Lightning logger's constructor arguments: ssdistill's defaults, then the tracker's settings (which win)."""
    # a copy: a logger may change what it is given (Lightning's MLflow logger adds the run name to the tags)
    ids, settings = _saved_ids(run_dir), copy.deepcopy(cfg.run.loggers.get(name, {}))
    if name == "tensorboard":
        return {"default_hp_metric": False, **settings, "save_dir": str(run_dir), "name": "tensorboard", "version": ""}
    if name == "mlflow":
        uri = mlflow_uri(cfg, run_dir)
        found = {"experiment_name": cfg.run.experiment, "run_name": run_dir.name, "artifact_location": mlflow_artifact_root(uri, run_dir)}
        run_id = ids.get("mlflow")
        if run_id and ids.get("mlflow_uri", uri) != uri:  # a resume pointed at another store: the recorded run is not there
            log.warning(
                "the MLflow store changed since %s started (was %s, now %s): it is logged into a new MLflow run there",
                run_dir.name,
                ids["mlflow_uri"],
                uri,
            )
            run_id = None
        return {**found, **settings, "tracking_uri": uri, "run_id": run_id}
    if settings.pop("offline", False):  # wandb.init's own mode: Lightning's offline=True sets $WANDB_MODE for the whole process
        settings.setdefault("mode", "offline")
    return {"name": run_dir.name, "project": cfg.run.experiment, **settings, "save_dir": str(run_dir), "id": ids.get("wandb"), "resume": "allow"}


def build_logger(name: str, cfg: DistillConfig, run_dir: Path) -> Logger:
    if name == "mlflow":
        import mlflow  # noqa: F401 - configures its loggers on import: quieted below

        # database set-up notices on the first run of a store, "experiment not found, creating it"
        for noisy in ("mlflow", "alembic", "lightning.pytorch.loggers.mlflow"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    logger = _logger_class(name)(**logger_arguments(name, cfg, run_dir))
    if name == "wandb":
        # Lightning passes wandb.init anonymous=None, which recent wandb (0.31 here; wandb PR #10909) counts as set and
        # warns of on every run ("The anonymous setting has no effect"): not passing it is what wandb asks for
        logger._wandb_init.pop("anonymous", None)
    return logger


def tracker_loggers(cfg: DistillConfig, run_dir: Path) -> list[Logger]:
    """The Lightning loggers of ``run.loggers`` besides CSV (checked before anything trains: :func:`check_trackers`)."""
    check_trackers(cfg)
    return [build_logger(name, cfg, run_dir) for name in cfg.run.tracker_names()]


def _trackers(trainer: L.Trainer) -> list[Logger]:
    return [logger for logger in trainer.loggers if not isinstance(logger, CSVLogger)]


def _kind(logger: Logger) -> str:
    return type(logger).__name__.removesuffix("Logger").lower()


def config_params(cfg: DistillConfig) -> dict[str, Any]:
    """The resolved config as flat tracker parameters: ``optim.lr``, ``method.name``, ``run.loggers.mlflow.tags.team``
    ... (lists, empty mappings and None as text)."""
    return {
        key: _without_password(value) if isinstance(value, (int, float, str, bool)) else json.dumps(value)
        for key, value in flatten(cfg.to_dict()).items()
    }


def _without_password(value: Any) -> Any:
    """A URI's password is not a parameter: ``https://user:secret@host`` is sent as ``https://user:***@host``."""
    if isinstance(value, str) and "://" in value and "@" in value.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = value.split("://", 1)
        host_part, _, path = rest.partition("/")
        credentials, host = host_part.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" + (f"/{path}" if path or rest.endswith("/") else "")
    return value


def give_back_mlflow_uri(user_uri: str | None) -> None:
    """MLflow's tracking URI (process-wide, also in $MLFLOW_TRACKING_URI) as it was before a tracker set it."""
    if os.environ.get("MLFLOW_TRACKING_URI") != user_uri:
        import mlflow

        mlflow.set_tracking_uri(user_uri)
        if user_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)


class TrackerStart(L.Callback):
    """When training starts (rank zero): the config becomes every tracker's parameters, and the trackers' run ids are
    kept in the run directory for a resume."""

    def __init__(self, cfg: DistillConfig, run_dir: Path) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        # MLflow's logger sets the process-wide tracking URI (and $MLFLOW_TRACKING_URI): given back after training, so a
        # later run in this process with another run.dir does not log into this run's store
        self.user_uri = os.environ.get("MLFLOW_TRACKING_URI")

    def teardown(self, trainer, module, stage: str) -> None:
        if "mlflow" in self.cfg.run.loggers:
            give_back_mlflow_uri(self.user_uri)

    def on_fit_start(self, trainer, module) -> None:
        trackers = _trackers(trainer)
        if not trainer.is_global_zero or not trackers:
            return
        params = config_params(self.cfg)
        ids = _saved_ids(self.run_dir)
        for logger in trackers:
            try:
                if _kind(logger) == "mlflow":
                    _mlflow_params(logger, params, self.cfg.run.loggers["mlflow"].get("tags") or {})
                else:
                    logger.log_hyperparams(params)
                if _kind(logger) == "tensorboard":
                    _tensorboard_hparams(logger, params)
            except Exception as exc:  # noqa: BLE001 - e.g. MLflow refuses a changed parameter after resume --force
                log.warning("%s kept the parameters it had (%s)", type(logger).__name__, short(str(exc)))
            if _kind(logger) == "mlflow":
                ids.update(mlflow=str(logger.run_id), mlflow_uri=mlflow_uri(self.cfg, self.run_dir))
            elif _kind(logger) == "wandb":
                ids["wandb"] = str(logger.version)
        if ids:
            atomic_write_text(self.run_dir / IDS_FILE, json.dumps(ids, indent=2))


def _mlflow_params(logger, params: dict[str, Any], tags: dict[str, Any]) -> None:
    """MLflow parameters cannot change once logged: a resumed run (``trainer.epochs`` extended, or a change forced)
    logs the parameters its MLflow run lacks, and each changed one as the tag ``resumed.<key>`` with its new value. The
    tags of ``run.loggers.mlflow.tags`` are set on the run (Lightning sets them only on a new one)."""
    logged = logger.experiment.get_run(logger.run_id).data.params
    missing = {key: value for key, value in params.items() if key not in logged}
    if missing:
        logger.log_hyperparams(missing)
    for key, value in params.items():  # Lightning keeps the first 250 characters of a value: compare those
        if key in logged and logged[key] != str(value)[:250]:
            logger.experiment.set_tag(logger.run_id, f"resumed.{key}", str(value))
    for key, value in tags.items():
        logger.experiment.set_tag(logger.run_id, str(key), str(value))


def _tensorboard_hparams(logger, params: dict[str, Any]) -> None:
    """The config in TensorBoard's HParams dashboard with the student's final k-NN as its metric (Lightning writes the
    dashboard record only when given metric values, and a value at step 0 would be a false point of the curve)."""
    from torch.utils.tensorboard.summary import hparams

    writer = logger.experiment._get_file_writer()
    for summary in hparams(params, {"final/student/knn_top1": 0.0}):
        writer.add_summary(summary)


def final_metrics(results: dict[str, Any]) -> dict[str, float]:
    """``final/<model>/<metric>`` of a run record: every evaluated model's k-NN top-1 (and top-5), the full suite's
    headline numbers when it ran, and the student's share of the teacher."""
    from ssdistill.eval.suite import headline_metrics

    metrics: dict[str, float] = {}
    for model, row in (results.get("knn") or {}).items():
        if isinstance(row, dict) and "top1" in row:
            metrics[f"final/{model}/knn_top1"] = float(row["top1"])
            if "top5" in row:
                metrics[f"final/{model}/knn_top5"] = float(row["top5"])
    for model, row in ((results.get("evaluation") or {}).get("models") or {}).items():
        metrics.update({f"final/{model}/{name}": float(value) for name, value in headline_metrics(row).items()})
    if isinstance(results.get("retained_pct"), (int, float)):
        metrics["final/retained_pct"] = float(results["retained_pct"])
    return metrics


def run_files(run_dir: Path) -> list[Path]:
    """The run's files a tracker receives at the end (``RUN_FILES`` that exist)."""
    return [run_dir / name for name in RUN_FILES if (run_dir / name).is_file()]


def _to_mlflow(client, run_id: str, paths: list[Path], folder: str) -> None:
    for path in paths:
        if path.is_dir():
            client.log_artifacts(run_id, str(path), folder or None)  # a folder's files, under ``folder``
        else:
            client.log_artifact(run_id, str(path), folder or None)


WANDB_FOLDER = "ssdistill"  # the run's files in a W&B run: beside, not over, W&B's own config.yaml, summary and logs


def _to_wandb(run, paths: list[Path], folder: str) -> None:
    """Copied into the W&B run's files folder under ``ssdistill/`` (so that an offline run holds them for ``wandb
    sync``; a saved file from elsewhere would be a link to a file that may change; W&B writes a config.yaml of its own
    at the top) and saved now."""
    root = Path(run.dir)
    for path in paths:
        target = root / WANDB_FOLDER / folder / ("" if path.is_dir() else path.name)  # a folder's files, under ``folder``
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.copytree(path, target, dirs_exist_ok=True)
        else:
            shutil.copyfile(path, target)
        for saved in sorted(target.rglob("*")) if path.is_dir() else [target]:
            if saved.is_file():
                run.save(str(saved), base_path=str(root), policy="now")


def _to_tensorboard(writer, paths: list[Path], step: int) -> None:
    """TensorBoard has no file store: the config and the records (text) become text entries ``run/<file name>``."""
    for path in paths:
        if path.suffix in (".yaml", ".json"):
            writer.add_text(f"run/{path.name}", f"```\n{path.read_text()}\n```", global_step=step)
    writer.flush()


def _log_files(logger: Logger, paths: list[Path], step: int) -> None:
    kind = _kind(logger)
    if kind == "mlflow":
        _to_mlflow(logger.experiment, logger.run_id, paths, "")
    elif kind == "wandb":
        _to_wandb(logger.experiment, paths, "")
    elif kind == "tensorboard":
        _to_tensorboard(logger.experiment, paths, step)


def trained_elsewhere(trainer: L.Trainer) -> bool:
    """Training ran in processes this one launched (trainer.strategy=ddp_spawn, ddp_fork): this process's tracker
    loggers were copied into them and never started here."""
    launcher = getattr(trainer.strategy, "_launcher", None)
    return getattr(launcher, "_start_method", None) in ("spawn", "fork", "forkserver")


def log_final(trainer: L.Trainer, results: dict[str, Any], run_dir: Path, cfg: DistillConfig | None = None) -> None:
    """The final evaluation into every tracker at the last step, and the run's files (rank zero; Lightning has closed
    them after training, so each is finalised again to flush). A tracker that cannot take them is a warning: the run
    itself has finished. After a spawned run the trackers are re-opened from the ids its rank zero kept in
    trackers.json, so the final figures join the training curves' tracker runs rather than starting new ones."""
    trackers = _trackers(trainer)
    if not trackers or not trainer.is_global_zero:
        return
    user_uri = os.environ.get("MLFLOW_TRACKING_URI")  # a re-opened MLflow logger sets it process-wide: given back below
    reopen = cfg is not None and trained_elsewhere(trainer)
    metrics = final_metrics(results)
    try:
        for logger in trackers:
            name = type(logger).__name__
            try:
                if reopen:
                    logger = build_logger(_kind(logger), cfg, run_dir)
                logger.log_metrics(metrics, step=trainer.global_step)
                _log_files(logger, run_files(run_dir), trainer.global_step)
                logger.finalize("success")
                if _kind(logger) == "wandb":  # Lightning leaves the W&B run open; finishing writes its summary
                    logger.experiment.finish()
            except Exception as exc:  # noqa: BLE001 - a tracker server gone away, a full disk: the run's own files are whole
                log.warning("%s did not take the run's final figures and files (%s); they are in %s", name, short(str(exc)), run_dir)
    finally:
        if any(_kind(logger) == "mlflow" for logger in trackers):
            give_back_mlflow_uri(user_uri)


def send_files(cfg: DistillConfig, run_dir: Path, paths: list[Path], folder: str) -> list[str]:
    """After the run (an export, a report): files, and the files of folders, into the run's MLflow and W&B runs,
    re-opened by their ids in trackers.json, under ``folder``; returns the trackers that took them. A tracker that cannot is a warning."""
    ids, sent = _saved_ids(run_dir), []
    for name in ("mlflow", "wandb"):
        if name not in cfg.run.loggers or not ids.get(name):
            continue
        try:
            if name == "mlflow":
                from mlflow.tracking import MlflowClient

                _to_mlflow(MlflowClient(mlflow_uri(cfg, run_dir)), ids["mlflow"], paths, folder)
            else:
                run = build_logger("wandb", cfg, run_dir).experiment
                try:
                    _to_wandb(run, paths, folder)
                finally:
                    run.finish()
            sent.append(name)
        except Exception as exc:  # noqa: BLE001 - the files are written; the tracker is the extra copy
            log.warning("the %s run of %s did not take %s (%s)", name, run_dir, ", ".join(p.name for p in paths), short(str(exc)))
    return sent
