"""Lightning's own knobs in a run config: ``trainer.precision`` (every value Lightning accepts), ``trainer.strategy`` (a
strategy registered with Lightning) and ``trainer.extra`` (further ``lightning.Trainer`` keyword arguments), checked in
one line before a run directory exists, and recorded in the run record as Lightning resolved them."""

from __future__ import annotations

import contextlib
import difflib
import inspect
import logging
import os
import warnings
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.strategies import StrategyRegistry

from ssdistill.config import DistillConfig
from ssdistill.distributed import process_count
from ssdistill.errors import ConfigError, short

LOG = logging.getLogger("ssdistill")

# the lightning.Trainer arguments the run sets from its own config: the key to set instead (None: the engine's own)
OWN_ARGUMENTS: dict[str, str | None] = {
    "accelerator": "trainer.accelerator",
    "strategy": "trainer.strategy",
    "devices": "trainer.devices",
    "num_nodes": "trainer.num_nodes",
    "precision": "trainer.precision",
    "max_epochs": "trainer.epochs",
    "accumulate_grad_batches": "trainer.accumulate_grad_batches",
    "log_every_n_steps": "trainer.log_every_n_steps",
    "limit_train_batches": "trainer.limit_train_batches",
    "enable_progress_bar": "trainer.progress_bar",
    "enable_checkpointing": "trainer.keep_checkpoints",
    "gradient_clip_val": "optim.grad_clip",
    "logger": "run.loggers",
    "default_root_dir": "run.dir",
    "callbacks": "the callbacks argument of ssdistill.distill",
    "plugins": None,
    "enable_model_summary": None,
    "num_sanity_val_steps": None,
    "use_distributed_sampler": None,
}
# Trainer arguments that would switch off what every run needs (checkpoints, logs): refused, with what to use instead
NOT_FOR_A_RUN = {
    "barebones": "it switches off the checkpoints and logs every run writes",
    "fast_dev_run": "it switches off the checkpoints and logs every run writes; for a quick check set trainer.epochs=1 trainer.limit_train_batches=2",
    # the run record says what was trained (trainer.epochs, the schedule over them, the data): these would make it wrong
    "max_steps": "it stops training before trainer.epochs while the record and the schedule say trainer.epochs; set trainer.epochs "
    "(and trainer.limit_train_batches) instead",
    "max_time": "it stops training at a time while the record and the schedule say trainer.epochs; set trainer.epochs instead",
    "min_steps": "the run trains exactly trainer.epochs; set trainer.epochs instead",
    "min_epochs": "the run trains exactly trainer.epochs; set trainer.epochs instead",
    "overfit_batches": "it trains on other images than the record names; for a quick check set trainer.limit_train_batches",
    "reload_dataloaders_every_n_epochs": "the run's loader keeps its own epoch order for an exact resume",
}
TRANSFORMER_ENGINE = ("transformer-engine", "transformer-engine-float16")


def quiet_lightning() -> None:
    """No third-party noise in a run's output: Lightning's banner lines (GPU / TPU available, tips for its cloud
    products, checkpoint restore notices) are informational, and a deprecation inside Lightning is not the user's to
    fix; warnings and errors still show."""
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.fabric.utilities.rank_zero",
        "lightning.pytorch.trainer.connectors.signal_connector",
    ):  # "Received SIGTERM": the resume hint says it
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"The number of training batches .* is smaller than the logging interval")
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # the run directory always holds config.yaml already; resumes keep metrics.csv (engine/metrics_csv.py)
    warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")


def strategy_names() -> list[str]:
    """``auto`` and every strategy name registered with Lightning (ddp, ddp_spawn, fsdp, deepspeed, ...)."""
    return ["auto", *StrategyRegistry.available_strategies()]


def trainer_argument_names() -> list[str]:
    return [name for name in inspect.signature(L.Trainer.__init__).parameters if name != "self"]


def lightning_strategy(cfg: DistillConfig) -> str:
    """The strategy handed to Lightning: ``trainer.strategy``; ``auto`` is ddp when the run has more than one process
    (Lightning's own auto would pick ddp_spawn for several CPU processes), else Lightning's auto (one device)."""
    t = cfg.trainer
    if t.strategy != "auto":
        return t.strategy
    return "ddp" if process_count(t.devices, t.num_nodes, t.accelerator) > 1 else "auto"


def check_trainer_options(cfg: DistillConfig) -> None:
    """``trainer.strategy``, ``trainer.extra`` and ``trainer.precision`` refused in one line when Lightning would refuse
    them (or fail with a traceback once training starts); then a trainer is built from them alone (no callbacks, no
    loggers), so that whatever else Lightning refuses is one line before anything is written."""
    quiet_lightning()
    t = cfg.trainer
    if isinstance(t.devices, int) and t.devices < 1:
        raise ConfigError(f"trainer.devices must be at least 1 (or auto), got {t.devices}")
    names = strategy_names()
    if t.strategy not in names:
        close = difflib.get_close_matches(t.strategy, names, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"trainer.strategy={t.strategy} is not a Lightning strategy; {hint}valid: {', '.join(names)}")
    known = trainer_argument_names()
    for key in t.extra:
        if key in OWN_ARGUMENTS:
            instead = OWN_ARGUMENTS[key]
            if instead is None:
                raise ConfigError(f"trainer.extra.{key} is set by ssdistill itself and cannot be passed; remove it from trainer.extra")
            raise ConfigError(f"trainer.extra.{key} is set by ssdistill from {instead}; set {instead} instead")
        if key in NOT_FOR_A_RUN:
            raise ConfigError(f"trainer.extra.{key} cannot be used: {NOT_FOR_A_RUN[key]}")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = (
                f"did you mean '{close[0]}'?"
                if close
                else f"the ones it takes: {', '.join(k for k in known if k not in OWN_ARGUMENTS and k not in NOT_FOR_A_RUN)}"
            )
            raise ConfigError(f"trainer.extra.{key} is not an argument of lightning.Trainer; {hint}")
    check_precision(cfg)
    with warnings.catch_warnings(), process_settings_kept():
        warnings.simplefilter("ignore")
        lightning_trainer(cfg, logger=False, enable_checkpointing=False, enable_progress_bar=False)


@contextlib.contextmanager
def process_settings_kept():
    """The process-wide torch settings a Trainer sets while it is built (``deterministic`` / ``benchmark``:
    deterministic algorithms, cuDNN's flags, cuBLAS's workspace variable), given back afterwards: the check's throwaway
    trainer changes nothing for a run that is then refused, or for other code in the process."""
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2], saved[3]
        if saved[4] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[4]


def check_precision(cfg: DistillConfig) -> None:
    """Transformer Engine needs NVIDIA's package and a CUDA GPU (Lightning would fail on import); 16-mixed on the CPU is
    run by Lightning as bf16-mixed (said here; results.json records ``training.precision_used``)."""
    t = cfg.trainer
    on_gpu = t.accelerator in ("gpu", "cuda") or (t.accelerator == "auto" and _cuda())
    if t.precision in TRANSFORMER_ENGINE:
        from lightning.fabric.plugins.precision.transformer_engine import _TRANSFORMER_ENGINE_AVAILABLE

        if not on_gpu or not _TRANSFORMER_ENGINE_AVAILABLE:
            raise ConfigError(
                f"trainer.precision={t.precision} needs a CUDA GPU and NVIDIA's Transformer Engine "
                "(pip install 'transformer-engine[pytorch]'); use trainer.precision=bf16-mixed or bf16-true instead"
            )
    if t.precision in ("16", "16-mixed") and not on_gpu:
        LOG.warning(
            "trainer.precision=%s runs as bf16-mixed on the CPU (float16 autocast is a GPU feature); results.json records training.precision_used",
            t.precision,
        )


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def lightning_trainer(cfg: DistillConfig, **arguments: Any) -> L.Trainer:
    """``lightning.Trainer`` with the run's accelerator, devices, strategy, precision and ``trainer.extra``, plus the
    engine's ``arguments``; what Lightning refuses is one line naming the settings it was given."""
    t = cfg.trainer
    try:
        return L.Trainer(
            accelerator=t.accelerator,
            devices=t.devices,
            num_nodes=t.num_nodes,
            strategy=lightning_strategy(cfg),
            precision=t.precision,
            **t.extra,
            **arguments,
        )
    except (MisconfigurationException, ValueError, TypeError, ImportError, RuntimeError) as exc:
        given = [f"trainer.{key}={getattr(t, key)}" for key in ("accelerator", "devices", "strategy", "precision")]
        given += [f"trainer.extra.{key}={value}" for key, value in t.extra.items()]
        raise ConfigError(f"Lightning refuses {', '.join(given)}: {short(' '.join(str(exc).split()), 240)}") from None


def lightning_record(cfg: DistillConfig, trainer: L.Trainer) -> dict[str, Any]:
    """What Lightning ran with, for results.json's ``training``: the precision it resolved (``32`` is ``32-true``,
    ``16-mixed`` on the CPU is ``bf16-mixed``), the strategy as configured and as built, and the passthrough."""
    return {
        "precision_used": trainer.precision,
        "strategy": cfg.trainer.strategy,
        "strategy_used": type(trainer.strategy).__name__,
        "processes": trainer.world_size,
        # the trainer's count: under ddp_spawn the launching process that writes the record has no process group
        "images_per_optimiser_step": cfg.data.batch_size * cfg.trainer.accumulate_grad_batches * trainer.world_size,
        "extra": dict(cfg.trainer.extra),
    }
