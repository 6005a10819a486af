"""One distillation run, start to finish: data, students, the teacher provider fulfilling the method's needs, the
method's preparation, training (Lightning), evaluation and the run record.

The run knows nothing of any method's fields: it reads the method's declarations (``teacher_needs``,
``student_members``, ``prepare`` / ``train_views``) and hands the method its signals and students by name.
"""

from __future__ import annotations

import copy
from functools import partial
import json
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
import torch

from ssdistill.config import DistillConfig, StudentConfig
from ssdistill.data.datasets import ImageSource, SubsetImages, seeded_subset
from ssdistill.data.sampling import EpochKeyed, ResumableLoader, SeededItems, ShuffledBatchSampler
from ssdistill.data.views import original_view
from ssdistill.engine import metrics_csv
from ssdistill.engine.datasets import build_dataset
from ssdistill.engine.lightning_options import check_trainer_options, lightning_record
from ssdistill.engine.module import DistillMethod
from ssdistill.engine.provider import TeacherProvider, open_split
from ssdistill.engine.records import RESULTS_VERSION, machine, peak_rss_mb, versions
from ssdistill.engine.resume import resume_checkpoint, run_checkpoint
from ssdistill.engine.rundir import existing_run_dir
from ssdistill.engine.trainer import TrainingClock, build_trainer, fit, refuse_single_image_batches
from ssdistill.distributed import process_count, world_size
from ssdistill.engine.trackers import check_trackers, log_final
from ssdistill.errors import ConfigError, DataError, ModelError
from ssdistill.eval.features import extract_features
from ssdistill.eval.monitor import AlignmentMonitor, KNNMonitor
from ssdistill.eval.classes import align_classes
from ssdistill.eval.run_evaluation import evaluate_run, memory_name
from ssdistill.eval.tables import format_summary
from ssdistill.files import atomic_write_text
from ssdistill.labels import PRIMARY_STUDENT, student_label, teacher_label
from ssdistill.methods.registry import METHODS
from ssdistill.models.students import Student
from ssdistill.recipe import build_config


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


def compute_device(accelerator: str) -> torch.device:
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def build_student(student: StudentConfig, seed: int) -> Student:
    """A random-init student; its weights are a function of ``seed`` alone."""
    torch.manual_seed(seed)
    return Student(student.arch, student.mean, student.std, student.channels_last, student.model_args, student.resolution)


def build_students(method: type[DistillMethod], cfg: DistillConfig) -> dict[str, Student]:
    """The method's student members, member i seeded with ``trainer.seed + i`` (one member: the run's seed); a member
    that is a copy of another (``DistillMethod.copied_members``, for example an EMA copy) starts as that member's exact
    copy and is not trained by the optimiser."""
    members, copies = method.run_members(cfg), method.run_copies(cfg)
    built = {member: build_student(spec, cfg.trainer.seed + i) for i, (member, spec) in enumerate(members.items()) if member not in copies}
    for member, source in copies.items():
        built[member] = copy.deepcopy(built[source]).requires_grad_(False)
    return {member: built[member] for member in members}


def train_source(cfg: DistillConfig) -> ImageSource:
    """The training images: the method's own source (``DistillMethod.training_source``, for example the union of CKA's
    task folders) or ``data.train``, then ``data.train_subset``."""
    own = METHODS[cfg.method.name].training_source(cfg, lambda spec: open_split(cfg, spec))
    source = own if own is not None else open_split(cfg, cfg.data.train)
    return seeded_subset(source, cfg.data.train_subset, cfg.trainer.seed)


def evaluation_split(cfg: DistillConfig) -> tuple[str, ImageSource] | None:
    """(name, images) of the evaluation split: ``data.val``, else the method's own (``DistillMethod.evaluation_source``),
    else None (no k-NN numbers)."""
    if cfg.data.val:
        return cfg.data.val, open_split(cfg, cfg.data.val)
    own = METHODS[cfg.method.name].evaluation_source(cfg, lambda spec: open_split(cfg, spec))
    return None if own is None else (f"{cfg.method.name} evaluation split", own)


def check_inputs(cfg: DistillConfig) -> None:
    """What can be checked before a run directory exists, so that a mistake costs one line and leaves nothing behind:
    the evaluation splits exist and have class folders, teacher weight files exist, the cache folder is writable, the trackers
    of run.loggers and their settings, Lightning's trainer settings (strategy, precision, trainer.extra)."""
    check_trackers(cfg)
    check_trainer_options(cfg)
    for setting, spec in (("data.val", cfg.data.val), ("data.knn_train", cfg.data.knn_train)):
        if spec:
            split = open_split(cfg, spec)
            if split.labels is None:
                raise DataError(
                    f"{setting}={spec} has no class sub-folders: the k-NN evaluation needs labelled images (one folder per class); "
                    f"point {setting} at such a folder or set {setting}=null"
                )
    check_classes(cfg)
    for name, teacher in cfg.teachers.items():
        if teacher.weights and not Path(teacher.weights).expanduser().is_file():
            key = "teacher" if list(cfg.teachers) == [name] else f"teachers.{name}"
            raise ModelError(f"{key}.weights={teacher.weights} not found; set it to an existing .safetensors/.pth file")
    if cfg.cache.enabled:
        from ssdistill.cache.store import cache_root

        folder = cache_root(cfg.cache.dir)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as exc:
            raise ConfigError(
                f"the teacher cache folder {folder} is not writable ({exc.strerror}): set cache.dir to a writable folder or "
                "cache.enabled=false"
            ) from None


def check_classes(cfg: DistillConfig) -> None:
    """The evaluation will match data.val's classes to the k-NN memory's by name: refuse now, before anything is trained,
    what it would refuse then (a class the memory lacks, a one-class memory, the same images in both), and warn now of
    what it would warn of. The splits are opened as the run opens them (a split is decoded once per process, so
    data.skip_corrupt costs nothing more here)."""
    if not cfg.data.val:
        return
    query = open_split(cfg, cfg.data.val)
    memory = open_split(cfg, cfg.data.knn_train) if cfg.data.knn_train else train_source(cfg)
    if memory.labels is None or query.labels is None:
        return  # said by check_inputs (data.val) or by the evaluation's note (unlabelled data.train)
    align_classes(memory, query, cfg.eval.shared_classes, memory_name(cfg), f"data.val ({cfg.data.val})", k=cfg.eval.knn_k)


def check_teachers(cfg: DistillConfig, needs: dict) -> None:
    """A method that reads teachers must read every configured one (a teacher nobody reads would only be evaluated)."""
    used = {need.teacher or cfg.primary_teacher for need in needs.values()}
    unused = [name for name in cfg.teachers if name not in used]
    if needs and unused:
        raise ConfigError(
            f"method '{cfg.method.name}' reads teacher {', '.join(sorted(used))} only; remove {', '.join(unused)} from teachers"
        )


def run_distillation(
    cfg: DistillConfig, run_dir: Path, resuming: bool, callbacks=(), quiet: bool = False, record: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Train and evaluate; ``record``: entries added to the run record (results.json)."""
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    method = METHODS[cfg.method.name]
    device = compute_device(cfg.trainer.accelerator)
    source = train_source(cfg)
    processes = process_count(cfg.trainer.devices, cfg.trainer.num_nodes, cfg.trainer.accelerator)
    if len(source) // max(processes, 1) < cfg.data.batch_size:  # the samplers drop partial batches: no step at all
        each = f" for each of its {processes} processes" if processes > 1 else ""
        raise DataError(
            f"{cfg.data.train or getattr(source, 'description', 'the training set')} has {len(source)} images, fewer than "
            f"data.batch_size={cfg.data.batch_size}{each}; lower the batch size"
        )

    needs = method.teacher_needs(cfg)
    check_teachers(cfg, needs)
    students = build_students(method, cfg)
    refuse_single_image_batches(cfg.data.batch_size, students.values())  # before the teacher's signals are computed
    initial_states = {member: copy.deepcopy(s.state_dict()) for member, s in students.items()}
    ctx = TeacherProvider(cfg, source, device)
    signals = ctx.fulfil(needs)
    prepared = build_dataset(method, cfg, ctx)

    # re-seed so heads, data order and augmentations do not depend on how the teacher signal was obtained
    # (a cold cache fill draws random numbers, a warm cache does not)
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    module = method(cfg, students, signals, dataset_size=len(source), prepared=prepared.tensors)
    refuse_single_image_batches(cfg.data.batch_size, [module])  # the method's heads too
    # data order and every item's augmentations are functions of (seed, epoch, image): a resumed run sees exactly the
    # batches an uninterrupted one would (the samplers shard themselves across DDP processes)
    size = len(prepared.dataset)
    batches = prepared.batch_sampler or ShuffledBatchSampler(size, cfg.data.batch_size, cfg.trainer.seed)
    loader = ResumableLoader(
        SeededItems(prepared.dataset, cfg.trainer.seed),
        batch_sampler=EpochKeyed(batches, size),
        num_workers=cfg.data.num_workers,
        persistent_workers=cfg.data.num_workers > 0,
        pin_memory=device.type == "cuda",
    )
    restore = DataPosition(loader)
    trainer = build_trainer(cfg, run_dir, [*callbacks, restore, *monitors(cfg, source, module, ctx)], distributed_sampler=False)
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
    clock = next(c for c in trainer.callbacks if isinstance(c, TrainingClock))
    this_attempt = clock.this_attempt()
    timing: dict[str, float] = {}
    if ctx.signal_seconds is not None:
        timing["teacher_signal_seconds"] = ctx.signal_seconds
    timing["train_seconds"] = clock.before + this_attempt  # every attempt of a resumed run
    timing["train_seconds_this_attempt"] = this_attempt
    timing["epoch_train_seconds"] = [round(seconds, 3) for seconds in clock.epochs]  # each epoch's batches (time to a quality)
    timing["train_images_per_s"] = images_per_second(
        module.batches_trained, this_attempt, clock.epochs, module.batches_per_epoch(), cfg.data.batch_size * trainer.world_size
    )
    timing["peak_rss_mb"] = peak_rss_mb()
    if not trainer.is_global_zero:
        return {}

    start = time.perf_counter()
    module.float()  # evaluated in float32 (trainer.precision=bf16-true, 16-true and 64-true converted the weights)
    trained = {member: s.cpu() for member, s in module.students().items()}
    initial = _initial_students(method, cfg, initial_states)
    resolution = {member: spec.resolution for member, spec in method.run_members(cfg).items()}
    classifiers = {member: c.cpu() for member, c in module.member_classifiers().items()}
    split = evaluation_split(cfg)
    knn, suite, note, classes = evaluate_run(cfg, ctx, trained, initial, resolution, run_dir, classifiers, split, set(method.run_copies(cfg)))
    extra = module.extra_evaluation(ctx, initial if cfg.eval.random_init else None)
    timing["eval_seconds"] = time.perf_counter() - start
    results = results_record(
        cfg, run_dir, method, trained, ctx, source, knn, note, timing, trainer.global_step, bool(needs), split[0] if split else None
    )
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


def _initial_students(method: type[DistillMethod], cfg: DistillConfig, states: dict[str, dict]) -> dict[str, Student]:
    """The random-init students of the evaluation: one per independently initialised member (a copy has none)."""
    built = build_students(method, cfg)
    for member, student in built.items():
        student.load_state_dict(states[member])
    return {member: student for member, student in built.items() if member not in method.run_copies(cfg)}


def _teacher_rows(cfg: DistillConfig, ctx: TeacherProvider, spec: str, split: ImageSource, images: SubsetImages) -> torch.Tensor:
    """The primary teacher's pooled features of ``images`` (a subset of ``split``): rows of the evaluation split's
    cached table when the evaluation will read that table anyway (teacher evaluated, cache on), else computed for the
    subset alone (never a whole training set for 256 rows)."""
    if cfg.cache.enabled and cfg.eval.teacher and spec == cfg.data.val:
        return ctx.features(None, spec, split, "pooled")[images.positions]
    teacher = ctx.teacher(None, "pooled")
    return extract_features(teacher, images, teacher.original_view(), cfg.data.eval_batch_size, 0, ctx.device, "teacher alignment")


def monitors(cfg: DistillConfig, source: ImageSource, module: DistillMethod, ctx: TeacherProvider | None = None) -> list:
    """The label-free alignment monitor (``eval.align_images``; when the run has a teacher to align with) and the k-NN
    monitor when ``eval.monitor_every`` asks for it (labelled memory and val needed)."""
    views = {member: original_view(spec.resolution) for member, spec in type(module).run_members(cfg).items()}
    found = []
    if cfg.eval.align_images and ctx is not None and (cfg.eval.teacher or type(module).teacher_needs(cfg)):
        spec, split = evaluation_split(cfg) or (cfg.data.train, source)
        if len(split) >= 4:
            images = seeded_subset(split, cfg.eval.align_images, cfg.trainer.seed)
            if images is split:  # all of it: still a subset, whose positions index ``split`` (itself maybe a subset)
                images = SubsetImages(split, list(range(len(split))))
            rows = partial(_teacher_rows, cfg, ctx, spec, split, images)
            found.append(AlignmentMonitor(images, views, rows, cfg.data.eval_batch_size))
    if not cfg.eval.monitor_every:
        return found
    memory = open_split(cfg, cfg.data.knn_train) if cfg.data.knn_train else source
    split = evaluation_split(cfg)
    if split is None or memory.labels is None:
        raise ConfigError("eval.monitor_every needs labelled data: a class-folder data.train (or data.knn_train) and data.val")
    memory = seeded_subset(memory, min(cfg.eval.monitor_images, len(memory)), cfg.trainer.seed)
    return [
        *found,
        KNNMonitor(memory, split[1], views, cfg.eval.monitor_every, cfg.eval.knn_k, cfg.eval.knn_t,
                   cfg.data.eval_batch_size, cfg.data.num_workers)
    ]


def _teacher_record(teacher) -> dict[str, Any]:
    return {"name": teacher.name, "fingerprint": teacher.fingerprint, "output": teacher.output, "preprocess": teacher.preprocess.__dict__}


def results_record(cfg, run_dir, method, students, ctx, source, knn, note, timing, steps, teacher_in_training, val=None) -> dict[str, Any]:
    """The run record (results.json); ``val``: the name of the evaluation split (``data.val`` or the method's own)."""
    reference, student = teacher_label(cfg.primary_teacher), student_label(next(iter(students)))
    retained = None
    if knn and reference in knn and student in knn and knn[reference]["top1"] > 0:
        retained = 100.0 * knn[student]["top1"] / knn[reference]["top1"]
    teachers = {}
    for name in cfg.teachers:  # every teacher that was built (trained with or evaluated), with its fingerprint
        if teacher_in_training or cfg.eval.teacher:
            teachers[name] = {**_teacher_record(ctx.teacher(name)), "weights": cfg.teachers[name].weights}
    members = {member: {"arch": s.arch, "resolution": r.resolution, "dim": s.dim} for (member, s), r in zip(students.items(), method.run_members(cfg).values())}
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
        },
        "student": next(iter(members.values())),
        "students": members,
        "teacher": teachers.get(cfg.primary_teacher),
        "teachers": teachers,
        "signals": ctx.records,
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
        "approximations": ctx.approximations,
        "deviations": method.deviations(cfg),
        "teacher_cache": cfg.cache.enabled,
        "teacher_in_training": teacher_in_training,
        "device": str(ctx.device),  # where the evaluation (and its images/s) ran
        "machine": machine(),
        "versions": versions(),
        "config": cfg.to_dict(),
    }


def load_student_from_run(
    run_dir: str | Path, checkpoint: str | Path | None = None, member: str | None = None
) -> tuple[DistillConfig, Student]:
    """Rebuild a run's student ``member`` (default: its first) and load its weights from ``checkpoint`` (default: the
    run's newest readable checkpoint, normally ``checkpoints/last.ckpt``)."""
    run = existing_run_dir(run_dir)
    cfg = build_config(run / "config.yaml")
    members = METHODS[cfg.method.name].run_members(cfg)
    member = member or next(iter(members))
    if member not in members:
        raise ModelError(f"the run has no student member '{member}'; its members are {', '.join(members)}")
    state = run_checkpoint(run, checkpoint)[1]["state_dict"]
    student = build_student(members[member], cfg.trainer.seed)
    prefix = f"{member}."
    student.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    return cfg, student


__all__ = ["PRIMARY_STUDENT", "run_distillation", "load_student_from_run", "build_student", "compute_device"]
