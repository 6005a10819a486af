"""The run record (``results.json``): what was trained, on what, how long it took, and the evaluation's figures."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssdistill.distributed import world_size
from ssdistill.engine.records import RESULTS_VERSION, machine, versions
from ssdistill.labels import student_label, teacher_label
from ssdistill.runs.assemble import student_side_warnings

if TYPE_CHECKING:
    from ssdistill.runs.assemble import Run


def images_per_second(
    batches_this_attempt: int, seconds_this_attempt: float, epoch_seconds: list[float], batches_per_epoch: int, images_per_batch: int
) -> float:
    """Training throughput: this attempt's batches over its seconds; an attempt that resumed after the last epoch
    trained nothing, and then the run's completed epochs (each epoch's batches over its recorded seconds) give it."""
    if batches_this_attempt > 0:
        return batches_this_attempt * images_per_batch / max(seconds_this_attempt, 1e-9)
    if epoch_seconds and sum(epoch_seconds) > 0:
        return len(epoch_seconds) * batches_per_epoch * images_per_batch / sum(epoch_seconds)
    return 0.0


def _teacher_record(teacher) -> dict[str, Any]:
    return {"name": teacher.name, "fingerprint": teacher.fingerprint, "output": teacher.output, "preprocess": teacher.preprocess.__dict__}


def results_record(
    run: Run, run_dir: Path, students: dict, knn, note: str | None, timing: dict, steps: int, val: str | None = None
) -> dict[str, Any]:
    """The run record (results.json) of assembled run ``run`` with trained ``students``; ``val``: the name of the evaluation
    split (``data.val`` or the method's own)."""
    cfg, method, ctx, source, teacher_in_training = run.cfg, run.method, run.ctx, run.source, bool(run.needs)
    reference, student = teacher_label(cfg.primary_teacher), student_label(next(iter(students)))
    retained = None
    if knn and reference in knn and student in knn and knn[reference]["top1"] > 0:
        retained = 100.0 * knn[student]["top1"] / knn[reference]["top1"]
    teachers = {}
    for name in cfg.teachers:  # every teacher that was built (trained with or evaluated), with its fingerprint
        if teacher_in_training or cfg.eval.teacher:
            teachers[name] = {**_teacher_record(ctx.teacher(name)), "weights": cfg.teachers[name].weights}
    members = {
        member: {"arch": s.arch, "resolution": r.resolution, "dim": s.dim}
        for (member, s), r in zip(students.items(), method.run_members(cfg).values())
    }
    return {
        "results_version": RESULTS_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_dir": str(run_dir),
        "method": cfg.method.name,
        "seed": cfg.trainer.seed,
        "epochs": cfg.trainer.epochs,
        "steps": steps,
        "training": {  # how the steps were computed (speed and memory knobs; the config holds them too)
            "precision": cfg.trainer.precision,
            "accumulate_grad_batches": cfg.trainer.accumulate_grad_batches,
            "images_per_optimiser_step": cfg.data.batch_size * cfg.trainer.accumulate_grad_batches * world_size(),
            "student_channels_last": {member: spec.channels_last for member, spec in method.run_members(cfg).items()},
            # the EMA copies' momentum (trainer.ema_momentum, or 1 - 1 / (trainer.ema_horizon x the run's steps)); null: none
            "ema_momentum": cfg.trainer.ema_momentum_for(run.module.planned_steps) if cfg.trainer.ema else None,
        },
        "student": next(iter(members.values())),
        "students": members,
        "teacher": teachers.get(cfg.primary_teacher),
        "teachers": teachers,
        "signals": {name: dict(record) for name, record in run.fulfilment.records.items()},
        "data": {
            "train": cfg.data.train or getattr(source, "description", ""),
            "train_size": len(source),
            "train_fingerprint": source.fingerprint(),
            "skipped_unreadable": [str(p) for p in source.skipped],
            "knn_train": cfg.data.knn_train or cfg.data.train,
            "val": val,
        },
        "protocol": {"knn": {"k": cfg.eval.knn_k, "temperature": cfg.eval.knn_t, "tap": "pooled", "view": "original"}},
        "knn": knn,
        "knn_note": note,
        "retained_pct": retained,
        "timing": timing,
        "approximations": list(run.fulfilment.approximations),
        "warnings": student_side_warnings(run),  # said at the run's start too
        "deviations": method.deviations(cfg),
        "teacher_cache": cfg.cache.enabled,
        "teacher_in_training": teacher_in_training,
        "device": str(ctx.device),  # where the evaluation (and its images/s) ran
        "machine": machine(),
        "versions": versions(),
        "config": cfg.to_dict(),
    }
