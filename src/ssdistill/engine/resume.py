"""Resuming a run safely: the config it continues with, and the checkpoint it continues from.

A resumed run keeps the config it was started with. Overrides may change only what cannot change what is trained:
evaluation, logging, progress, loading (``SAFE_TO_CHANGE``), and ``trainer.epochs`` upwards to extend a run (its
schedule is then laid out over the new length). Anything else is refused with one line naming the changed keys, unless
``force``, in which case the changes are recorded in results.json as ``resumed_with_changes``. The check runs before
anything in the run directory is touched. A finished run (results.json written for its epochs) has nothing to resume.

``last.ckpt`` is the newest checkpoint; when it cannot be read (a kill during its write, a damaged disk), the newest
per-epoch checkpoint that can be read is used instead, with a warning.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from ssdistill.config import DistillConfig
from ssdistill.errors import ConfigError

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
        shown = "; ".join(described[:4]) + (f"; and {len(described) - 4} more" if len(described) > 4 else "")
        raise ConfigError(
            f"resume would change what {run_dir} trains ({shown}): a resumed run keeps its config; start a new run, or pass "
            f"--force (force=True) to resume anyway with the change recorded"
        )
    return described


def trained_epochs(checkpoint: dict) -> int:
    """Epochs whose training the checkpoint includes (an end-of-epoch checkpoint counts its epoch; a mid-epoch one not)."""
    try:
        return int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError):
        return int(checkpoint.get("epoch", -1)) + 1


def resume_checkpoint(run_dir: Path) -> tuple[Path, int]:
    """The checkpoint to resume from and its global step: ``last.ckpt``, or when it cannot be read the newest readable
    per-epoch one (each candidate is read once, here)."""
    folder = run_dir / "checkpoints"
    last = folder / "last.ckpt"
    candidates = [last] if last.is_file() else []
    candidates += sorted((p for p in folder.glob("*.ckpt") if p.name != "last.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not candidates:
        raise ConfigError(f"nothing to resume in {run_dir}: no checkpoint in {folder} (the run stopped before its first checkpoint)")
    for path in candidates:
        try:
            step = int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])
        except Exception as exc:  # noqa: BLE001 - a checkpoint that cannot be read is skipped, whatever the reason
            print(f"warning: checkpoint {path} cannot be read ({str(exc).splitlines()[0][:120]}); trying an older one", file=sys.stderr)
            continue
        if path != last:
            print(f"warning: resuming from {path.name}, the newest readable checkpoint", file=sys.stderr)
        return path, step
    raise ConfigError(f"no checkpoint in {folder} can be read; the run cannot be resumed: start it again")
