"""Experiment trackers through Lightning's own loggers (``run.loggers``): TensorBoard, MLflow, Weights & Biases.

Every tracker gets what Lightning logs during training (losses, loss terms, learning rate, the k-NN and alignment
monitors), the resolved config as its parameters when training starts, and the final evaluation (k-NN, and the full
suite's linear probe and the rest when it ran) as metrics at the last step. A tracker's run id is kept in the run
directory (``trackers.json``) so that a resumed run goes on logging into the same tracker run. CSV
(``metrics.csv``) is always written, whatever the list says.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger, Logger

from ssdistill.config import DistillConfig
from ssdistill.engine.resume import flatten
from ssdistill.errors import ConfigError, short
from ssdistill.files import atomic_write_text

IDS_FILE = "trackers.json"
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def _require(name: str) -> None:
    import importlib.util

    if importlib.util.find_spec(PACKAGES[name]) is None:
        raise ConfigError(f"run.loggers: {name} needs the {PACKAGES[name]} package: pip install 'ssdistill[loggers]' (or drop {name})")


def _saved_ids(run_dir: Path) -> dict[str, str]:
    path = run_dir / IDS_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def mlflow_uri(cfg: DistillConfig, run_dir: Path) -> str:
    """The MLflow tracking URI: run.mlflow_uri, else $MLFLOW_TRACKING_URI, else one SQLite store for every run of the
    runs folder (MLflow's plain-folder store is in maintenance mode and refused by MLflow 3 unless asked for)."""
    return cfg.run.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{run_dir.parent.resolve() / 'mlflow.db'}"


def tracker_loggers(cfg: DistillConfig, run_dir: Path) -> list[Logger]:
    """The Lightning loggers of ``run.loggers`` besides CSV (checked for their packages before anything trains)."""
    ids = _saved_ids(run_dir)
    loggers: list[Logger] = []
    for name in cfg.run.loggers:
        if name == "csv":
            continue
        _require(name)
        if name == "tensorboard":
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False))
        elif name == "mlflow":
            import mlflow  # noqa: F401 - configures its loggers on import: quieted below
            from lightning.pytorch.loggers import MLFlowLogger

            # database set-up notices on the first run of a store, "experiment not found, creating it"
            for noisy in ("mlflow", "alembic", "lightning.pytorch.loggers.mlflow"):
                logging.getLogger(noisy).setLevel(logging.ERROR)
            loggers.append(MLFlowLogger(
                experiment_name=cfg.run.experiment, run_name=run_dir.name, tracking_uri=mlflow_uri(cfg, run_dir), run_id=ids.get("mlflow"),
            ))
        else:
            from lightning.pytorch.loggers import WandbLogger

            loggers.append(WandbLogger(
                save_dir=str(run_dir), name=run_dir.name, project=cfg.run.experiment, id=ids.get("wandb"), resume="allow",
            ))
    return loggers


def _trackers(trainer: L.Trainer) -> list[Logger]:
    return [logger for logger in trainer.loggers if not isinstance(logger, CSVLogger)]


def config_params(cfg: DistillConfig) -> dict[str, Any]:
    """The resolved config as flat tracker parameters: ``optim.lr``, ``method.name``, ... (lists and None as text)."""
    return {key: value if isinstance(value, (int, float, str, bool)) else json.dumps(value) for key, value in flatten(cfg.to_dict()).items()}


class TrackerStart(L.Callback):
    """When training starts (rank zero): the config becomes every tracker's parameters, and the trackers' run ids are
    kept in the run directory for a resume."""

    def __init__(self, cfg: DistillConfig, run_dir: Path) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        # MLflow's logger sets the process-wide tracking URI (and $MLFLOW_TRACKING_URI): given back after training, so a
        # later run in this process with another run.dir does not log into this run's store
        self.user_uri = os.environ.get("MLFLOW_TRACKING_URI")

    def teardown(self, trainer, module, stage: str) -> None:
        if "mlflow" in self.cfg.run.loggers and os.environ.get("MLFLOW_TRACKING_URI") != self.user_uri:
            import mlflow

            mlflow.set_tracking_uri(self.user_uri)
            if self.user_uri is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)

    def on_fit_start(self, trainer, module) -> None:
        trackers = _trackers(trainer)
        if not trainer.is_global_zero or not trackers:
            return
        params = config_params(self.cfg)
        ids = _saved_ids(self.run_dir)
        for logger in trackers:
            try:
                if type(logger).__name__ == "MLFlowLogger":
                    _mlflow_params(logger, params)
                else:
                    logger.log_hyperparams(params)
                if type(logger).__name__ == "TensorBoardLogger":
                    _tensorboard_hparams(logger, params)
            except Exception as exc:  # noqa: BLE001 - e.g. MLflow refuses a changed parameter after resume --force
                warnings.warn(f"{type(logger).__name__} kept the parameters it had ({short(str(exc))})", stacklevel=1)
            kind = type(logger).__name__.removesuffix("Logger").lower()
            if kind in ("mlflow", "wandb"):
                ids[kind] = str(logger.run_id if kind == "mlflow" else logger.version)
        if ids:
            atomic_write_text(self.run_dir / IDS_FILE, json.dumps(ids, indent=2))


def _mlflow_params(logger, params: dict[str, Any]) -> None:
    """MLflow parameters cannot change once logged: a resumed run (``trainer.epochs`` extended, or a change forced)
    logs the parameters its MLflow run lacks, and each changed one as the tag ``resumed.<key>`` with its new value."""
    logged = logger.experiment.get_run(logger.run_id).data.params
    missing = {key: value for key, value in params.items() if key not in logged}
    if missing:
        logger.log_hyperparams(missing)
    for key, value in params.items():  # Lightning keeps the first 250 characters of a value: compare those
        if key in logged and logged[key] != str(value)[:250]:
            logger.experiment.set_tag(logger.run_id, f"resumed.{key}", str(value))


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


def log_final(trainer: L.Trainer, results: dict[str, Any]) -> None:
    """The final evaluation into every tracker at the last step (rank zero; Lightning has closed them after training,
    so each is finalised again to flush)."""
    trackers = _trackers(trainer)
    if not trackers or not trainer.is_global_zero:
        return
    metrics = final_metrics(results)
    for logger in trackers:
        logger.log_metrics(metrics, step=trainer.global_step)
        logger.finalize("success")
        if type(logger).__name__ == "WandbLogger":  # Lightning leaves the W&B run open; finishing writes its summary
            logger.experiment.finish()
