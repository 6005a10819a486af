"""Python API: ``distill`` (train + evaluate a student), ``evaluate`` (a run's models, or a teacher alone),
``fill_cache`` and ``teacher_split_features``. A thin facade over the run (``runs/``: assemble, train, evaluation, load) and the
teacher provider (``engine/provider.py``).

    import ssdistill
    results = ssdistill.distill("configs/demo/feature.yaml", trainer={"epochs": 5})
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from pydantic import ValidationError

from ssdistill.cache.fill import cached_teacher_features
from ssdistill.config import DistillConfig, TeacherConfig, is_tap
from ssdistill.data.datasets import open_images
from ssdistill.distributed import compute_device, launch_rank_world
from ssdistill.engine.provider import TeacherProvider, open_split
from ssdistill.engine.resume import ForcedChanges, check_resume
from ssdistill.engine.rundir import RUN_DIR_ENV, existing_run_dir, lock_run, new_run_dir, unlock_run
from ssdistill.engine.trainer import interruption
from ssdistill.errors import ConfigError, DataError, Interrupted, StorageError
from ssdistill.eval.suite import Candidate, SuiteOptions, evaluate_suite
from ssdistill.files import atomic_write_text, remedy, write_failure
from ssdistill.methods.registry import METHODS
from ssdistill.models.teachers import build_teacher
from ssdistill.recipe import build_config, merge_nested, parse_overrides
from ssdistill.runs.assemble import check_inputs, train_source
from ssdistill.runs.evaluation import evaluate_saved_run, knn_table
from ssdistill.runs.load import load_student_from_run
from ssdistill.runs.train import run_distillation

log = logging.getLogger("ssdistill")

__all__ = ["distill", "evaluate", "fill_cache", "teacher_split_features", "load_student_from_run"]


def distill(
    config: str | Path | dict | DistillConfig | None = None,
    *,
    overrides: list[str] | dict[str, Any] | None = None,
    resume: str | Path | None = None,
    force: bool = False,
    callbacks: list | tuple = (),
    quiet: bool = False,
    **sections: Any,
) -> dict[str, Any]:
    """Distil a teacher into a student and evaluate it; returns the results record (also in ``results.json``).

    ``config`` is a YAML path, dict or ``DistillConfig``; ``overrides`` are ``key=value`` strings or a nested
    dict; keyword sections (``trainer={"epochs": 5}``) are merged last. ``resume=RUN_DIR`` continues a
    killed run from ``RUN_DIR/checkpoints/last.ckpt`` with its saved config: overrides may change evaluation, logging and
    loading settings and raise ``trainer.epochs``; any other change is refused unless ``force`` (then recorded)."""
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    merged_overrides = merge_nested(overrides or {}, sections)
    forced: list[str] = []
    lead = is_rank_zero()  # the process that locks the run directory and writes its config (not DDP's other processes)
    if resume is not None:
        run_dir = existing_run_dir(resume)
        if lead:
            lock_run(run_dir)  # before anything is read: a second resume of the same run is refused here
        try:
            cfg = build_config(run_dir / "config.yaml", merged_overrides)
            forced = check_resume(run_dir, build_config(run_dir / "config.yaml"), cfg, force)  # before anything is written
            check_inputs(cfg)
        except BaseException:
            unlock_run(run_dir)
            raise
        # config.yaml is rewritten once the checkpoint is restored under the resumed config (a forced change it cannot
        # take leaves it as it was); the optimiser and schedule follow the resumed config from the resumed step
        callbacks = [*callbacks, ForcedChanges(), *([ConfigWriter(cfg, run_dir)] if lead else [])]
    else:
        cfg = build_config(config, merged_overrides)
        check_inputs(cfg)  # before the run directory exists
        run_dir = new_run_dir(cfg.run.dir, cfg.run.name, cfg.method.name)
        if lead:
            try:
                lock_run(run_dir)
                write_config(cfg, run_dir)
            except BaseException as exc:  # a run.dir too full for config.yaml: one line, and no folder left behind
                unlock_run(run_dir)
                remove_failed_start(run_dir)
                if isinstance(exc, OSError):
                    raise StorageError(f"{write_failure(exc, run_dir, 'config.yaml')}; {remedy(exc)} or set run.dir to another folder") from None
                raise
    os.environ[RUN_DIR_ENV] = str(run_dir)  # DDP worker processes re-run this script and must join this run
    try:
        return run_distillation(cfg, run_dir, resume is not None, callbacks, quiet, {"resumed_with_changes": forced} if forced else None)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM before or after training (the teacher's signals, the evaluation)
        if resume is None and lead:
            remove_failed_start(run_dir)
        if isinstance(exc, Interrupted) and exc.run_dir is not None:
            raise
        what = "SIGTERM" if getattr(exc, "exit_code", 130) == 143 else "Ctrl-C"
        raise interruption(run_dir, what, "outside training (teacher signals or evaluation)") from None
    except BaseException:
        if resume is None and lead:
            remove_failed_start(run_dir)
        raise
    finally:
        unlock_run(run_dir)
        if os.environ.get("LOCAL_RANK") is None:
            os.environ.pop(RUN_DIR_ENV, None)


def write_config(cfg: DistillConfig, run_dir: Path) -> None:
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))


class ConfigWriter(L.Callback):
    """Writes a resumed run's config.yaml once its checkpoint was restored under it: when training starts, or when fit
    ends for a run whose training was already complete (killed while it was evaluated)."""

    def __init__(self, cfg: DistillConfig, run_dir: Path) -> None:
        self.cfg, self.run_dir, self.written = cfg, run_dir, False

    def on_train_start(self, trainer, module) -> None:
        write_config(self.cfg, self.run_dir)
        self.written = True

    def on_fit_end(self, trainer, module) -> None:
        if not self.written:
            write_config(self.cfg, self.run_dir)


def is_rank_zero() -> bool:
    """The first process of a launch: torchrun's or SLURM's global rank 0, and not a process Lightning started."""
    return launch_rank_world()[0] == 0 and int(os.environ.get("LOCAL_RANK", "0")) == 0


def remove_failed_start(run_dir: Path) -> None:
    """A new run that failed before its first checkpoint leaves nothing behind (its name stays free for the rerun)."""
    if run_dir.is_dir() and not any((run_dir / "checkpoints").glob("*.ckpt")):
        shutil.rmtree(run_dir, ignore_errors=True)


def teacher_split_features(cfg: DistillConfig, spec: str, device: torch.device | str = "cpu", teacher: str | None = None) -> torch.Tensor:
    """The pooled features [N, d] of teacher ``teacher`` (default: the primary) on every image of the split ``spec``
    (original view), in dataset order; read from the teacher cache when it is on (filled on first use), else computed."""
    source = open_split(cfg, spec)
    return TeacherProvider(cfg, source, device).features(teacher, spec, source, "pooled")


def evaluate(
    run: str | Path | None = None,
    *,
    checkpoint: str | Path | None = None,
    teacher: str | None = None,
    weights: str | None = None,
    resolution: int | None = None,
    train: str | None = None,
    val: str | None = None,
    k: int = 20,
    temperature: float = 0.07,
    full: bool = True,
    batch_size: int = 256,
    num_workers: int = 2,
    root: str = "~/.cache/ssdistill/datasets",
) -> dict[str, Any]:
    """Evaluate a run's students next to its teachers and random-init students, or a teacher / timm model alone.

    For a run: ``{"knn": side-by-side k-NN (k, temperature), "evaluation": the full suite or None}``, also written
    to ``RUN/evaluation.json`` (features kept under ``RUN/features``). For a model alone: its k-NN row, at its own
    input size or at ``resolution`` (for example a student's, to see what the teacher's features are worth there)."""
    if run is None and checkpoint is not None:
        run = Path(checkpoint).resolve().parent.parent
    device = compute_device("auto")
    if run is not None:
        return evaluate_saved_run(run, checkpoint, device, train=train, val=val, k=k, temperature=temperature, full=full)
    if teacher is None:
        raise ConfigError("ssdistill eval needs a run directory, --checkpoint, or --teacher NAME")
    if not train or not val:
        raise ConfigError("evaluating a model alone needs --train and --val (labelled image folders)")
    try:
        spec = TeacherConfig(name=teacher, weights=weights, resolution=resolution)
    except ValidationError as exc:  # the config's own bounds (a positive side), said with the flag's name
        raise ConfigError(f"--resolution {resolution}: {exc.errors()[0]['msg']}; give the input side in pixels (e.g. 96)") from None
    model = build_teacher(spec)
    memory, query = open_images(train, root), open_images(val, root)
    candidate = Candidate(teacher, model, model.original_view(), model.preprocess.resolution)
    if memory.labels is None or query.labels is None:
        raise DataError("k-NN needs labelled memory and query sets (class sub-folders)")
    options = SuiteOptions.knn_only(k, temperature)
    options.split_names = (f"--train ({train})", f"--val ({val})")
    suite = evaluate_suite([candidate], memory, query, options, batch_size, num_workers, device)
    return knn_table(suite, k, temperature)


def fill_cache(
    teacher: str,
    data: list[str],
    *,
    weights: str | None = None,
    output: str = "pooled",
    batch_size: int = 256,
    num_workers: int = 2,
    cache_dir: str | None = None,
    dtype: str = "float16",
    root: str = "~/.cache/ssdistill/datasets",
) -> list[dict[str, Any]]:
    """Fill (or check) the teacher cache for each dataset; returns shape, seconds and images/s per dataset."""
    if not is_tap(output):
        raise ConfigError(f"the teacher tap is pooled, logits or module:<name>, got '{output}'")
    model = build_teacher(TeacherConfig(name=teacher, weights=weights, output=output))
    device = compute_device("auto")
    done = []
    for spec in data:
        source = open_images(spec, root)
        start = time.perf_counter()
        table = cached_teacher_features(model, source, spec, batch_size, num_workers, device, cache_dir, dtype)
        seconds = time.perf_counter() - start
        done.append({"data": spec, "shape": list(table.shape), "seconds": seconds, "images_per_s": len(source) / max(seconds, 1e-9)})
    return done


def fill_run_cache(config: str | Path | dict | DistillConfig, overrides: list[str] | dict | None = None) -> dict[str, dict[str, Any]]:
    """Fill the teacher cache entries a run of ``config`` reads (original-view tables and augmentation banks), without
    training: a run started later finds them filled. Processes started side by side share the chunks, so two of them
    (or this beside the run itself) fill a long bank faster. Returns the run's teacher-signal records, by signal name."""
    cfg = build_config(config, overrides)
    if not cfg.cache.enabled:
        raise ConfigError("cache.enabled is false in this config: there is no cache to fill (drop the override or set cache.enabled=true)")
    method = METHODS[cfg.method.name]
    ctx = TeacherProvider(cfg, train_source(cfg))
    fulfilment = ctx.fulfil(method.teacher_needs(cfg))
    return {name: dict(record) for name, record in fulfilment.records.items()}
