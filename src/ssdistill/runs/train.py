"""One distillation run, start to finish: the run assembled (``runs.assemble``), trained by Lightning, evaluated
side by side with its teachers and random-init students (``runs.evaluation``), and its record written
(``runs.record``)."""

from __future__ import annotations

import json
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L

from ssdistill.config import DistillConfig
from ssdistill.data.sampling import EpochKeyed, ResumableLoader, SeededItems, ShuffledBatchSampler
from ssdistill.distributed import compute_device
from ssdistill.engine import metrics_csv
from ssdistill.engine.lightning_options import lightning_record
from ssdistill.engine.records import peak_rss_mb
from ssdistill.engine.resume import resume_checkpoint
from ssdistill.engine.trackers import log_final
from ssdistill.engine.trainer import TrainingClock, build_trainer, fit
from ssdistill.eval.tables import format_summary
from ssdistill.files import atomic_write_text
from ssdistill.runs.assemble import assemble, evaluation_split, initial_students, monitors, student_side_warnings
from ssdistill.runs.evaluation import evaluate_run
from ssdistill.runs.record import images_per_second, results_record

log = logging.getLogger("ssdistill")


def run_distillation(
    cfg: DistillConfig, run_dir: Path, resuming: bool, callbacks=(), quiet: bool = False, record: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Train and evaluate; ``record``: entries added to the run record (results.json)."""
    run = assemble(cfg, compute_device(cfg.trainer.accelerator))
    module, ctx = run.module, run.ctx
    for line in student_side_warnings(run):
        log.warning(line)
    # data order and every item's augmentations are functions of (seed, epoch, image): a resumed run sees exactly the
    # batches an uninterrupted one would (the samplers shard themselves across DDP processes)
    size = len(run.prepared.dataset)
    batches = run.prepared.batch_sampler or ShuffledBatchSampler(size, cfg.data.batch_size, cfg.trainer.seed)
    loader = ResumableLoader(
        SeededItems(run.prepared.dataset, cfg.trainer.seed),
        batch_sampler=EpochKeyed(batches, size),
        num_workers=cfg.data.num_workers,
        persistent_workers=cfg.data.num_workers > 0,
        pin_memory=run.device.type == "cuda",
    )
    restore = DataPosition(loader)
    trainer = build_trainer(cfg, run_dir, [*callbacks, restore, *monitors(cfg, run.source, module, ctx)], distributed_sampler=False)
    loader.progress = partial(batches_processed, trainer)  # partials, not lambdas: trainer.strategy=ddp_spawn pickles them
    # read when the optimiser is built, inside fit: under DDP the process group exists by then, so the samplers
    # count this process's share of the images
    module.batches_per_epoch = partial(batches_per_epoch, loader, cfg.trainer.limit_train_batches)
    last, resumed_step = resume_checkpoint(run_dir) if resuming else (None, 0)
    previous_metrics = metrics_csv.set_aside(run_dir, resumed_step) if resuming and trainer.is_global_zero else None
    try:  # Ctrl-C and SIGTERM end in Interrupted (a resume hint); metrics.csv is whole however training ends
        fit(trainer, module, loader, last, run_dir)
    finally:
        if previous_metrics is not None:
            metrics_csv.merge(run_dir, previous_metrics)
    timing = training_timing(trainer, run)
    if not trainer.is_global_zero:
        return {}

    start = time.perf_counter()
    module.float()  # evaluated in float32 (trainer.precision=bf16-true, 16-true and 64-true converted the weights)
    trained = {member: s.cpu() for member, s in module.students().items()}
    initial = initial_students(run)
    resolution = {member: spec.resolution for member, spec in run.method.run_members(cfg).items()}
    classifiers = {member: c.cpu() for member, c in module.member_classifiers().items()}
    split = evaluation_split(cfg)
    knn, suite, note, classes = evaluate_run(cfg, ctx, trained, initial, resolution, run_dir, classifiers, split, set(run.method.run_copies(cfg)))
    extra = module.extra_evaluation(ctx, initial if cfg.eval.random_init else None)
    timing["eval_seconds"] = time.perf_counter() - start
    results = results_record(run, run_dir, trained, knn, note, timing, trainer.global_step, split[0] if split else None)
    results["evaluation"] = suite
    results["training"].update(lightning_record(cfg, trainer))  # the precision and strategy Lightning resolved, trainer.extra
    results["data"]["classes"] = classes  # how data.val's classes were matched to the memory's, what was left out
    results.update(extra)
    results.update(record or {})
    atomic_write_text(run_dir / "results.json", json.dumps(results, indent=2))
    log_final(trainer, results, run_dir, cfg)
    if not quiet:
        print(format_summary(results))
    return results


def training_timing(trainer: L.Trainer, run) -> dict[str, Any]:
    """Seconds of the teacher signals and of training (every attempt of a resumed run, this attempt, each epoch),
    throughput and peak memory."""
    clock = next(c for c in trainer.callbacks if isinstance(c, TrainingClock))
    this_attempt = clock.this_attempt()
    timing: dict[str, Any] = {}
    if run.fulfilment.seconds is not None:
        timing["teacher_signal_seconds"] = run.fulfilment.seconds
    timing["train_seconds"] = clock.before + this_attempt  # every attempt of a resumed run
    timing["train_seconds_this_attempt"] = this_attempt
    timing["epoch_train_seconds"] = [round(seconds, 3) for seconds in clock.epochs]  # each epoch's batches (time to a quality)
    images_per_step = run.cfg.data.batch_size * trainer.world_size
    timing["train_images_per_s"] = images_per_second(
        run.module.batches_trained, this_attempt, clock.epochs, run.module.batches_per_epoch(), images_per_step
    )
    timing["peak_rss_mb"] = peak_rss_mb()
    return timing


def batches_processed(trainer: L.Trainer) -> int:
    """Batches of this epoch the trainer has processed (the loader's position for a resumable state)."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.processed


def batches_per_epoch(loader, limit: int | None) -> int:
    """This process's batches per epoch (the samplers shard themselves across DDP processes), capped at ``limit``."""
    return min(len(loader), limit or len(loader))


class DataPosition(L.Callback):
    """Puts a resumed run's loader at its checkpoint's position (epoch, batches trained in it) while the checkpoint is
    restored, before Lightning makes the first data iterator: Lightning restores a loader's state itself only for mid-epoch
    checkpoints, and workers fetch their first indices as soon as the iterator exists."""

    def __init__(self, loader: ResumableLoader) -> None:
        self.loader = loader

    def on_load_checkpoint(self, trainer, module, checkpoint: dict) -> None:
        states = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {}).get("combined_loader")
        if states:
            self.loader.load_state_dict(states[0])


__all__ = ["run_distillation"]
