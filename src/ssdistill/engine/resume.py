"""Resuming a run safely: the config it continues with, and the checkpoint it continues from.

A resumed run keeps the config it was started with. Overrides may change only what cannot change what is trained:
evaluation, logging, progress, loading (``SAFE_TO_CHANGE``), and ``trainer.epochs`` upwards to extend a run (its
schedule is then laid out over the new length). Anything else is refused with one line naming the changed keys, unless
``force``, in which case the changes are recorded in results.json as ``resumed_with_changes``. The check runs before
anything in the run directory is touched. A finished run (results.json written for its epochs) has nothing to resume.

A forced change is applied from the resumed step on (the optimiser's hyper-parameters and the schedule are set from the
new config once the checkpoint is restored, :class:`ForcedChanges`); a change that alters the shapes of what the
checkpoint holds (a student's architecture or resolution, the method, the optimiser) cannot be applied and is refused
even with ``force``.

The newest checkpoint is the readable one with the highest step, normally ``last.ckpt``; when that cannot be read (a kill
during its write, a damaged disk) the newest readable per-epoch one is used instead, with a warning (resume, eval and
export alike).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch

from ssdistill.config import DistillConfig
from ssdistill.errors import ConfigError, ModelError

log = logging.getLogger("ssdistill")

SAFE_TO_CHANGE = (
    "eval.",
    "run.",
    "trainer.progress_bar",
    "trainer.log_every_n_steps",
    "trainer.keep_checkpoints",
    "data.num_workers",
    "data.eval_batch_size",
    "cache.dir",
)


# changes that alter what the checkpoint's tensors are (their shapes, or which ones exist): never applicable to it
CANNOT_APPLY = (
    "method.name",
    "student.arch",
    "student.resolution",
    "student.model_args",
    "students.",
    "optim.optimizer",
)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}`` (lists and other values are leaves)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_changes(saved: DistillConfig, requested: DistillConfig) -> dict[str, tuple[Any, Any]]:
    """Every key whose value differs: ``{key: (saved, requested)}``."""
    old, new = flatten(saved.to_dict()), flatten(requested.to_dict())
    return {key: (old.get(key), new.get(key)) for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)}


def _finished_epochs(run_dir: Path) -> int | None:
    """The epochs of the run's results.json (None when it has none: the run has not finished)."""
    path = run_dir / "results.json"
    if not path.is_file():
        return None
    try:
        return int(json.loads(path.read_text())["epochs"])
    except (ValueError, KeyError, TypeError):
        return None


def check_resume(run_dir: Path, saved: DistillConfig, requested: DistillConfig, force: bool = False) -> list[str]:
    """Refuse a resume that would change what is trained (unless ``force``) or that has nothing left to do; returns the
    forced changes as ``key: old -> new`` lines (empty when none)."""
    changes = config_changes(saved, requested)
    epochs = changes.pop("trainer.epochs", None)
    if epochs is not None and epochs[1] < epochs[0]:
        raise ConfigError(
            f"resume cannot shorten {run_dir} from trainer.epochs={epochs[0]} to {epochs[1]}: its schedule is laid out over "
            f"{epochs[0]} epochs; start a new run for a shorter one"
        )
    finished = _finished_epochs(run_dir)
    if finished is not None and finished >= requested.trainer.epochs:
        raise ConfigError(
            f"{run_dir} finished all {finished} epochs (results.json); nothing to resume: extend it with trainer.epochs=N "
            f"(N > {finished}), evaluate it again with `ssdistill eval {run_dir}`, or start a new run"
        )
    unsafe = {key: change for key, change in changes.items() if not key.startswith(SAFE_TO_CHANGE)}
    if not unsafe:
        return []
    described = [f"{key}: {old!r} -> {new!r}" for key, (old, new) in unsafe.items()]
    if not force:
        raise ConfigError(
            f"resume would change what {run_dir} trains ({_shown(described)}): a resumed run keeps its config; start a new run, "
            f"or pass --force (force=True) to resume anyway with the change applied from the resumed step and recorded"
        )
    impossible = [line for line, key in zip(described, unsafe) if key.startswith(CANNOT_APPLY)]
    if impossible:
        raise ConfigError(
            f"--force cannot apply {_shown(impossible)} to {run_dir}: its checkpoint holds weights of another shape (or "
            f"optimiser state of another kind); start a new run for it"
        )
    batches = [line for line, key in zip(described, unsafe) if key in SAME_EPOCH_BATCHES]
    found = newest_checkpoint(run_dir, quiet=True) if batches else None
    if found is not None and _mid_epoch(found[0]):
        raise ConfigError(
            f"--force cannot apply {_shown(batches)} to {run_dir} from its mid-epoch checkpoint (step {found[1]}): the rest of "
            f"that epoch is the old batches' (the images already trained are skipped by position); start a new run for it"
        )
    return described


# changes that make a mid-epoch checkpoint's position in its epoch (batches already trained) point at other images
SAME_EPOCH_BATCHES = ("data.batch_size", "data.train", "data.train_subset", "trainer.accumulate_grad_batches", "trainer.seed")


def _mid_epoch(path: Path) -> bool:
    try:
        progress = torch.load(path, map_location="cpu", weights_only=False, mmap=True)["loops"]["fit_loop"]["epoch_progress"]["current"]
        return int(progress["started"]) > int(progress["processed"])
    except Exception:  # noqa: BLE001 - unreadable or of another layout: resume itself will say
        return False


def _shown(described: list[str]) -> str:
    return "; ".join(described[:4]) + (f"; and {len(described) - 4} more" if len(described) > 4 else "")


def trained_epochs(checkpoint: dict) -> int:
    """Epochs whose training the checkpoint includes (an end-of-epoch checkpoint counts its epoch; a mid-epoch one not)."""
    try:
        return int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError):
        return int(checkpoint.get("epoch", -1)) + 1


def _reason(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]


def _step(path: Path) -> int:
    """The global step of a checkpoint (its tensors are mapped, not read: cheap for every kept checkpoint)."""
    return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["global_step"])


def newest_checkpoint(run_dir: Path, quiet: bool = False, skip: tuple[Path, ...] = ()) -> tuple[Path, int] | None:
    """(path, global step) of the run's readable checkpoint with the highest step (``last.ckpt`` on a tie), or None
    when it has none. Every ``*.ckpt`` counts: a run written by an older version may hold its final state in
    ``last-v1.ckpt`` beside an older ``last.ckpt``. Unreadable files are skipped, with a warning unless ``quiet``."""
    folder = Path(run_dir) / "checkpoints"
    found = []
    for path in sorted(folder.glob("*.ckpt")) if folder.is_dir() else []:
        if path in skip:
            continue
        try:
            found.append((_step(path), path.name == "last.ckpt", path.stat().st_mtime, path))
        except Exception as exc:  # noqa: BLE001 - a checkpoint that cannot be read is skipped, whatever the reason
            if not quiet:
                log.warning("checkpoint %s cannot be read (%s); it is skipped", path, _reason(exc))
    if not found:
        return None
    step, _, _, path = max(found)
    if path.name != "last.ckpt" and not quiet:
        log.warning("using %s (step %d), the newest readable checkpoint of %s", path.name, step, run_dir)
    return path, step


def resume_checkpoint(run_dir: Path) -> tuple[Path, int]:
    """The checkpoint to resume from and its global step: the newest readable one (normally ``last.ckpt``)."""
    folder = run_dir / "checkpoints"
    if not any(folder.glob("*.ckpt")):
        raise ConfigError(f"nothing to resume in {run_dir}: no checkpoint in {folder} (the run stopped before its first checkpoint)")
    found = newest_checkpoint(run_dir)
    if found is None:
        raise ConfigError(f"no checkpoint in {folder} can be read; the run cannot be resumed: start it again")
    return found


def run_checkpoint(run_dir: Path, checkpoint: str | Path | None = None) -> tuple[Path, dict]:
    """(path, contents) of the checkpoint that ``eval`` / ``export`` read: ``checkpoint`` when given (one line when it is
    missing or unreadable), else the run's newest readable one."""
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise ModelError(f"checkpoint {path} not found; pass a .ckpt file of the run (or leave --checkpoint out for its newest)")
        try:
            return path, torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"checkpoint {path} cannot be read ({_reason(exc)}); pass another checkpoint of the run") from None
    skipped: tuple[Path, ...] = ()
    while (found := newest_checkpoint(run_dir, skip=skipped)) is not None:
        try:
            return found[0], torch.load(found[0], map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - readable header, damaged tensors: the next one
            log.warning("checkpoint %s cannot be read (%s); it is skipped", found[0], _reason(exc))
            skipped += (found[0],)
    folder = Path(run_dir) / "checkpoints"
    if any(folder.glob("*.ckpt")):
        raise ModelError(f"no checkpoint in {folder} can be read: the run has to be trained again")
    raise ModelError(f"{run_dir} has no checkpoint yet (in {folder}): it has not finished an epoch")


class ForcedChanges(L.Callback):
    """Applies a resumed run's config to what the checkpoint restored: the optimiser's hyper-parameters (learning rate,
    weight decay, momentum...) and the schedule's peak, from the resumed step on. Lightning restores the optimiser and
    schedule states as they were saved, so a changed ``optim.lr`` would otherwise never be used. When nothing changed this
    recomputes exactly the restored values."""

    def on_train_start(self, trainer, module) -> None:
        fresh = module.configure_optimizers()  # the optimiser and schedule the new config builds (state-free)
        optimiser, schedule = trainer.optimizers[0], trainer.lr_scheduler_configs[0].scheduler
        schedule.base_lrs = list(fresh["lr_scheduler"]["scheduler"].base_lrs)
        for group, new, base, factor in zip(optimiser.param_groups, fresh["optimizer"].param_groups, schedule.base_lrs, schedule.lr_lambdas):
            group.update({key: value for key, value in new.items() if key != "params"})
            group["lr"] = base * factor(schedule.last_epoch)  # what LambdaLR computes: the restored value when unchanged
        schedule._last_lr = [group["lr"] for group in optimiser.param_groups]
