"""A run put together before training: its inputs checked (``check_inputs``, before the run folder exists), the training
and evaluation splits, the students, the teacher provider fulfilling the method's needs, the method's preparation and
the method module (``assemble``), and the monitors that watch it train.

The run knows nothing of any method's fields: it reads the method's declarations (``teacher_needs``,
``student_members``, ``prepare`` / ``train_views``) and hands the method its signals and students by name.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import lightning as L
import torch

from ssdistill.config import DistillConfig
from ssdistill.data.datasets import ImageSource, SubsetImages, seeded_subset
from ssdistill.data.views import original_view
from ssdistill.distributed import process_count
from ssdistill.engine.contract import Fulfilment, Preparation
from ssdistill.engine.datasets import build_dataset
from ssdistill.engine.lightning_options import check_trainer_options
from ssdistill.engine.module import DistillMethod
from ssdistill.engine.provider import TeacherProvider, open_split
from ssdistill.engine.trackers import check_trackers
from ssdistill.engine.trainer import refuse_single_image_batches
from ssdistill.errors import ConfigError, DataError, ModelError
from ssdistill.eval.classes import align_classes
from ssdistill.eval.features import extract_features
from ssdistill.eval.monitor import AlignmentMonitor, KNNMonitor
from ssdistill.labels import is_primary
from ssdistill.methods.registry import METHODS
from ssdistill.models.students import Student
from ssdistill.runs.load import build_students


@dataclass
class Run:
    """What ``assemble`` put together: the config, the method (class) and its module, the device, the training images, the
    teacher provider, the method's needs and their fulfilment (signals, records, approximations, bank, seconds), its
    prepared dataset, and each student member's random-init weights (the evaluation's random-init rows)."""

    cfg: DistillConfig
    method: type[DistillMethod]
    module: DistillMethod
    device: torch.device
    source: ImageSource
    ctx: TeacherProvider
    needs: dict
    fulfilment: Fulfilment
    prepared: Preparation
    initial_states: dict[str, dict]


def assemble(cfg: DistillConfig, device: torch.device | str = "cpu") -> Run:
    """Put a run together: the training images (refused when too few for one batch per process), the students, the
    teacher signals the method needs, its preparation and the method module. Seeded twice with ``trainer.seed``: before the
    students are built, and again after the teacher's signals, so that heads, data order and augmentations do not depend
    on how the signals were obtained (a cold cache fill draws random numbers, a warm cache does not)."""
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    method = METHODS[cfg.method.name]
    device = torch.device(device)
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
    fulfilment = ctx.fulfil(needs)
    prepared = build_dataset(method, cfg, ctx, fulfilment)
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    module = method(cfg, students, fulfilment.signals, dataset_size=len(source), prepared=prepared.tensors)
    refuse_single_image_batches(cfg.data.batch_size, [module])  # the method's heads too
    return Run(cfg, method, module, device, source, ctx, needs, fulfilment, prepared, initial_states)


# A student whose input side is under this share of its teacher's own side is warned about: the teacher's own features
# lose what they hold as its images shrink (docs/benchmarks.md, teacher resolution: EfficientNet-Lite0 on Imagenette has
# 98.2 % k-NN at its 224 px, 92.2 % at 96 px and 80.9 % at 64 px), and a student distilled at that side can hardly hold more
SIDE_WARNING_SHARE = 0.35


def student_side_warnings(run: Run) -> list[str]:
    """One line per student member whose input side is under SIDE_WARNING_SHARE of the primary teacher's side (runs
    that read a teacher only), saying what to do."""
    if not run.needs:
        return []
    teacher = run.ctx.teacher()
    side = teacher.preprocess.resolution
    lines = []
    for member, spec in run.method.student_members(run.cfg).items():
        if spec.resolution < SIDE_WARNING_SHARE * side:
            key = "student.resolution" if is_primary(member) else f"member {member}'s input side"
            shown = f"{key}={spec.resolution}" if is_primary(member) else f"{key} ({spec.resolution} px)"
            lines.append(
                f"{shown} is {spec.resolution / side:.0%} of the teacher's {side} px: at that side the teacher's own "
                f"features keep less of what they hold, which bounds the student (measure it: ssdistill eval --teacher "
                f"{teacher.name} --train DIR --val DIR --resolution {spec.resolution}); raise {key}, or pick a wider student at the "
                "same latency (docs/benchmarks.md#frontier)"
            )
    return lines


def memory_name(cfg: DistillConfig) -> str:
    """How messages name the k-NN memory split."""
    return f"data.knn_train ({cfg.data.knn_train})" if cfg.data.knn_train else f"the k-NN memory data.train ({cfg.data.train})"


def initial_students(run: Run) -> dict[str, Student]:
    """The random-init students of the evaluation: one per independently initialised member (a copy has none)."""
    built = build_students(run.method, run.cfg)
    for member, student in built.items():
        student.load_state_dict(run.initial_states[member])
    return {member: student for member, student in built.items() if member not in run.method.run_copies(run.cfg)}


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
                f"the teacher cache folder {folder} is not writable ({exc.strerror}): set cache.dir to a writable folder or cache.enabled=false"
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
        raise ConfigError(f"method '{cfg.method.name}' reads teacher {', '.join(sorted(used))} only; remove {', '.join(unused)} from teachers")


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
        KNNMonitor(memory, split[1], views, cfg.eval.monitor_every, cfg.eval.knn_k, cfg.eval.knn_t, cfg.data.eval_batch_size, cfg.data.num_workers),
    ]
