"""The run configuration's schema: a tree of small pydantic models, unknown keys rejected.

This module is a pure schema and imports nothing above ``errors``: the ``method`` section is typed as the
``MethodConfig`` base here, and ``ssdistill.recipe`` (which sits above the methods) validates it with the config
class of the method it names, so every method owns its own fields. Teachers are named: ``teachers: {name:
{...}}``, with ``teacher:`` the one-teacher shorthand (the teacher named ``teacher``).
"""

from __future__ import annotations

import copy
import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ssdistill.labels import SHORTHAND_TEACHER


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are re-checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class DataConfig(Section):
    train: str = Field(
        "",
        description="training images: an image folder (class sub-folders optional), a .txt list of image paths, WebDataset "
        "shards (wds:/path/train-{000..009}.tar, wds:https://..., wds:pipe:<command>) or a torchvision name such as cifar10:train",
    )
    val: str | None = Field(None, description="labelled evaluation split (ImageFolder or torchvision name such as cifar10:test)")
    knn_train: str | None = Field(None, description="labelled memory set for k-NN; default: data.train when it has class folders")
    root: str = Field(
        "~/.cache/ssdistill/datasets",
        description="where torchvision datasets live / are downloaded, and where remote wds: shards are cached (<root>/wds-cache)",
    )
    download: bool = Field(False, description="download torchvision datasets when missing (needs network)")
    train_subset: int | None = Field(None, gt=0, description="use a fixed seeded subset of this many training images")
    batch_size: int = Field(128, gt=0, description="images per step per device")
    eval_batch_size: int = Field(256, gt=0, description="images per batch for feature extraction")
    num_workers: int = Field(2, ge=0, description="data-loading worker processes per device")
    skip_corrupt: bool = Field(False, description="decode every image once up front and skip unreadable ones (counted) instead of failing")


class StudentConfig(Section):
    arch: str = Field("mobilenetv3_small_100", description="any timm architecture name (random init, classifier removed)")
    resolution: int = Field(96, gt=0, description="input side in pixels")
    mean: tuple[float, float, float] | None = Field(None, description="normalisation mean; default: timm pretrained_cfg")
    std: tuple[float, float, float] | None = Field(None, description="normalisation std; default: timm pretrained_cfg")
    channels_last: bool = Field(False, description="channels_last memory format (faster on GPUs with AMP)")
    model_args: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword arguments of timm.create_model (a ViT built for a fixed input size gets img_size=resolution unless "
        "given here); recorded in the exported config.json",
    )


# a teacher's output tap: its pooled features, its logits, or the output of one of its named submodules
TAP_PATTERN = r"^(pooled|logits|module:[A-Za-z_][A-Za-z0-9_.]*)$"


def is_tap(value: str) -> bool:
    """Whether ``value`` names a teacher output tap (``TAP_PATTERN``)."""
    return re.fullmatch(TAP_PATTERN, value) is not None


class TeacherConfig(Section):
    name: str = Field(
        "efficientnet_lite0",
        description="built-in teacher (see `ssdistill list`) or any timm architecture name",
    )
    weights: str | None = Field(None, description="local weights file (.safetensors/.pth/.th); for timm names loaded strictly")
    source: Literal["auto", "builtin", "hub", "file"] = Field(
        "auto", description="auto = builtin if the name is built in, file if weights is set, else the timm hub"
    )
    key_map: dict[str, str | None] = Field(
        default_factory=lambda: {"module.": ""},
        description='checkpoint key prefix -> replacement (null: drop those keys; the first matching prefix applies, "" matches '
        "every key), applied before strict loading",
    )
    output: str = Field(
        "pooled",
        pattern=TAP_PATTERN,
        description="teacher output tap used as its signal: pooled, logits, or module:<name> (the output of that named "
        "submodule, e.g. a head the checkpoint carries or an intermediate block; maps and token sequences averaged)",
    )
    model_args: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword arguments of timm.create_model for a timm teacher, e.g. {img_size: 224} for a DINOv2 backbone "
        "released at 518 px (timm resamples its position embedding when the weights load)",
    )
    resolution: int | None = Field(None, gt=0, description="input side; default: model_args.img_size, else the teacher's pretrained_cfg")
    crop_pct: float | None = Field(None, description="centre-crop fraction of the original view; default: pretrained_cfg")
    interpolation: Literal["bilinear", "bicubic"] | None = Field(None, description="resize filter; default: pretrained_cfg")
    mean: tuple[float, float, float] | None = Field(None, description="normalisation mean; default: pretrained_cfg")
    std: tuple[float, float, float] | None = Field(None, description="normalisation std; default: pretrained_cfg")
    channels_last: bool = Field(True, description="channels_last memory format (about 2.5x faster on CPU for EfficientNet)")
    precompute: bool = Field(True, description="compute the teacher signal of the original view once before training instead of every step")


class CacheConfig(Section):
    enabled: bool = Field(True, description="store teacher signals of deterministic views on disk and reuse them across runs")
    dir: str | None = Field(None, description="cache folder; default $SSDISTILL_CACHE_DIR or ~/.cache/ssdistill/teacher-cache")
    dtype: Literal["float16", "float32"] = Field("float16", description="storage precision of cached teacher outputs")


class AugConfig(Section):
    recipe: Literal["moco_v2", "cifar_basic", "none"] = Field(
        "moco_v2",
        description="student view augmentation: moco_v2 (the fields below), cifar_basic (resize to the resolution, random crop "
        "with 4-pixel zero padding, flip_p flip: the supervised CIFAR recipe), none (the original view)",
    )
    crop_scale_min: float = Field(0.2, gt=0, le=1, description="RandomResizedCrop minimum area fraction")
    crop_scale_max: float = Field(1.0, gt=0, le=1, description="RandomResizedCrop maximum area fraction")
    color_jitter: float = Field(0.4, ge=0, description="brightness/contrast/saturation jitter strength (hue = strength/4)")
    color_jitter_p: float = Field(0.8, ge=0, le=1, description="probability of colour jitter")
    grayscale_p: float = Field(0.2, ge=0, le=1, description="probability of grayscale")
    blur_p: float = Field(0.5, ge=0, le=1, description="probability of Gaussian blur (sigma in [0.1, 2])")
    flip_p: float = Field(0.5, ge=0, le=1, description="probability of horizontal flip")


class OptimConfig(Section):
    optimizer: Literal["sgd", "adamw", "adam"] = Field("sgd", description="optimiser")
    lr: float = Field(0.05, gt=0, description="peak learning rate (after warm-up)")
    weight_decay: float = Field(1e-4, ge=0, description="weight decay (not applied to norms and biases)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    nesterov: bool = Field(False, description="SGD with Nesterov momentum (the supervised CIFAR recipes)")
    warmup_epochs: float = Field(1.0, ge=0, description="linear warm-up length in epochs (stepped per optimiser step)")
    min_lr: float = Field(0.0, ge=0, description="learning rate at the end of the cosine schedule")
    grad_clip: float | None = Field(None, gt=0, description="clip gradient norm to this value")


class TrainerConfig(Section):
    epochs: int = Field(20, gt=0, description="training epochs")
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = Field("auto", description="Lightning accelerator")
    devices: int | Literal["auto"] = Field(1, description="devices per node (processes); >1 uses DDP")
    num_nodes: int = Field(1, gt=0, description="nodes (DDP via torchrun/SLURM)")
    # every value Lightning 2.6's Trainer accepts (lightning.fabric.connector._PRECISION_INPUT; its integers 16 / 32 / 64 are
    # read as text: trainer.precision=32 on a command line); tests/engine/test_trainer_options.py keeps the two sets equal
    precision: Literal[
        "32",
        "32-true",
        "bf16-mixed",
        "bf16-true",
        "16-mixed",
        "16-true",
        "64-true",
        "transformer-engine",
        "transformer-engine-float16",
        "64",
        "16",
        "bf16",
    ] = Field(
        "32",
        description="training precision, as Lightning names it: 32 / 32-true, bf16-mixed (also on CPU), bf16-true (weights "
        "in bfloat16), 16-mixed (GPU), 16-true, 64-true, transformer-engine (GPU, NVIDIA's package); aliases 16 = 16-mixed, "
        "bf16 = bf16-mixed, 64 = 64-true",
    )
    strategy: str = Field(
        "auto",
        description="Lightning strategy by its registered name (ddp, ddp_spawn, ddp_fork, ddp_find_unused_parameters_true, "
        "fsdp, deepspeed, ...); auto: ddp when the run has more than one process, else one device",
    )
    extra: dict[str, Any] = Field(
        default_factory=dict,
        description="further keyword arguments of lightning.Trainer (deterministic, benchmark, "
        "detect_anomaly, profiler, gradient_clip_algorithm, ...); the arguments ssdistill sets from its own keys are refused "
        "with the key to use",
    )

    @model_validator(mode="after")
    def _one_ema_setting(self) -> TrainerConfig:
        if self.ema_momentum is not None and self.ema_horizon is not None:
            raise ValueError(
                "trainer.ema_momentum and trainer.ema_horizon are both set (the recommended recipe sets ema_horizon): set the other "
                "to null, e.g. trainer.ema_horizon=null"
            )
        return self

    @property
    def ema(self) -> bool:
        """Whether the run keeps an EMA copy of its trained members."""
        return self.ema_momentum is not None or self.ema_horizon is not None

    def ema_momentum_for(self, steps: int) -> float | None:
        """The EMA copy's momentum in a run of ``steps`` optimiser steps (None: no copy)."""
        if self.ema_horizon is None:
            return self.ema_momentum
        return max(0.0, 1.0 - 1.0 / (self.ema_horizon * max(1, steps)))

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value  # trainer.precision=32 on a command line

    accumulate_grad_batches: int = Field(
        1,
        ge=1,
        description="batches per optimiser step (a step sees data.batch_size x this many images; queues take its keys "
        "once per step, momentum encoders update once per step, the schedule counts steps)",
    )
    seed: int = Field(0, description="seed for weights, data order and augmentations")
    progress_bar: bool = Field(True, description="show a progress bar")
    log_every_n_steps: int = Field(10, gt=0, description="metrics logging interval")
    checkpoint_every_n_steps: int | None = Field(
        None, gt=0, description="also write last.ckpt every N steps (mid-epoch resume); epochs always checkpoint"
    )
    keep_checkpoints: int = Field(3, ge=1, description="per-epoch checkpoints kept (besides last.ckpt)")
    ema_momentum: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="also keep an EMA copy of the student (of each trained member of a cohort), updated after "
        "every optimiser step with this momentum (parameters and BatchNorm statistics) and evaluated as the row student_ema; "
        "export it with `ssdistill export --member ema` (null: off; see also ema_horizon)",
    )
    ema_horizon: float | None = Field(
        None,
        gt=0,
        le=1,
        description="the same EMA copy with its time constant set as a share of the run's optimiser steps instead of a "
        "momentum: momentum = 1 - 1 / (share x steps) (0 when that is negative: the copy is the student), so the copy averages "
        "the same part of a short run as of a long one (the recommended recipe: 0.05; null: off; not with ema_momentum)",
    )
    limit_train_batches: int | None = Field(None, gt=0, description="cap steps per epoch (debugging)")


class EvalConfig(Section):
    knn_k: int = Field(20, gt=0, description="neighbours of the weighted k-NN")
    knn_t: float = Field(0.07, gt=0, description="temperature of the weighted k-NN")
    teacher: bool = Field(True, description="also evaluate the teacher (same data, its own preprocessing)")
    random_init: bool = Field(True, description="also evaluate a random-init student (the student's initial weights)")
    suite: Literal["knn", "full"] = Field(
        "knn", description="after training: knn (k-NN only) or full (both k-NN protocols, linear probe, few-shot, clustering)"
    )
    shared_classes: bool = Field(
        False,
        description="an evaluation class the k-NN memory has no image of: false refuses the run, true scores only the "
        "classes both splits have (the record says how many images were left out); classes are always matched by name",
    )
    monitor_every: int = Field(0, ge=0, description="k-NN of the student every N epochs during training, logged with the losses (0: off)")
    monitor_images: int = Field(5000, gt=0, description="at most this many labelled training images as the monitoring k-NN memory")
    align_images: int = Field(
        256,
        ge=0,
        description="label-free monitor: linear CKA of the student with the primary teacher on this many fixed images "
        "(from data.val when set, else fixed training images) after every epoch, logged as monitor/teacher_cka, and of the untrained "
        "student before the first step, logged as monitor/teacher_cka_start (0: off)",
    )


TRACKERS = ("csv", "tensorboard", "mlflow", "wandb")  # run.loggers: CSV is always written, the others on request


def _tracker_settings(value: Any) -> dict[str, dict[str, Any]]:
    """``run.loggers`` in its one form ``{name: {settings}}`` from a name, names, a mapping, or a list mixing names and one-key
    mappings (``[tensorboard, {mlflow: {tags: {team: vision}}}]``); a name given twice counts once, its settings twice
    are refused."""
    if value is None:
        return {}
    if isinstance(value, str):  # run.loggers=mlflow
        value = [value]
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        items = []
        for item in value:
            if isinstance(item, dict) and len(item) == 1:
                items.append(next(iter(item.items())))
            elif isinstance(item, str):
                items.append((item, None))
            else:
                raise PydanticCustomError(
                    "tracker_item", "each item is a tracker name or {name: {settings}}, for example [tensorboard, {mlflow: {tags: {team: vision}}}]"
                )
    else:
        raise PydanticCustomError("trackers", "expected tracker names or a mapping {name: {settings}}, for example [tensorboard, mlflow]")
    found: dict[str, dict[str, Any]] = {}
    for name, settings in items:
        if name not in TRACKERS:
            raise PydanticCustomError("tracker", f"unknown tracker '{name}'; the trackers are {', '.join(TRACKERS)}")
        if settings is not None and not isinstance(settings, dict):
            raise PydanticCustomError("tracker_settings", f"the settings of tracker {name} must be a mapping {{setting: value}}")
        if settings and found.get(name):
            raise PydanticCustomError("tracker_twice", f"tracker {name} is given settings twice; give its settings once")
        if name == "csv" and settings:
            raise PydanticCustomError("csv_settings", "the csv tracker takes no settings (metrics.csv is written by ssdistill itself)")
        found[name] = {**found.get(name, {}), **(settings or {})}
    return found


class RunConfig(Section):
    dir: str = Field("runs", description="parent folder of run directories")
    name: str | None = Field(None, description="run directory name; default: <method>-<timestamp>; an existing name gets a suffix")
    loggers: dict[Literal["csv", "tensorboard", "mlflow", "wandb"], dict[str, Any]] = Field(
        default_factory=dict,
        description="experiment trackers through Lightning's loggers: names ([tensorboard, mlflow, wandb]) or {name: {settings}} "
        "passed to the Lightning logger (mlflow: tags, experiment_name, artifact_location, log_model, tracking_uri; wandb: offline, "
        "entity, group, tags, job_type, notes; tensorboard: log_graph, ...); each gets the loss curves, the config as parameters, "
        "the final evaluation as metrics and the run's files (docs/trackers.md); CSV (RUN/metrics.csv) is always on",
    )
    mlflow_uri: str | None = Field(
        None,
        description="MLflow tracking URI (run.loggers.mlflow.tracking_uri wins); default: $MLFLOW_TRACKING_URI, else "
        "sqlite:///<run.dir>/mlflow.db (every run of run.dir in one store, artifacts in <run.dir>/mlartifacts)",
    )
    experiment: str = Field(
        "ssdistill",
        description="MLflow experiment / W&B project the run is logged under (run.loggers.mlflow.experiment_name and run.loggers.wandb.project win)",
    )

    @field_validator("name")
    @classmethod
    def _plain_folder_name(cls, value: str | None) -> str | None:
        if value is not None and (value.strip() in ("", ".", "..") or "/" in value or "\\" in value or "\0" in value):
            raise PydanticCustomError("plain_name", "run.name must be a plain folder name, not a path: put the parent folders in run.dir")
        return value

    @field_validator("loggers", mode="before")
    @classmethod
    def _one_form(cls, value: Any) -> Any:
        return _tracker_settings(value)

    def tracker_names(self) -> list[str]:
        """The trackers of ``run.loggers`` besides CSV (always written), in their order."""
        return [name for name in self.loggers if name != "csv"]


def official(value: Any) -> dict[str, Any]:
    """``json_schema_extra`` of a method field whose behaviour the method's official code fixes at ``value``:
    ``preset: official`` sets it there, and any other value is listed by ``MethodConfig.deviations``."""
    return {"official": value}


SELECTS = {"selects": True}  # ``json_schema_extra`` of a field that chooses what to run (a mode), never a deviation


class MethodConfig(Section):
    """Base of every method's config; ``name`` selects the method.

    Every other field is a switch or hyperparameter with a reference value: the official code's (declared with
    ``json_schema_extra=official(value)``) or, for knobs the official code has no counterpart of, ssdistill's
    default. ``deviations()`` lists each field that is in effect and differs from its reference, so the run record
    shows every departure from the official behaviour. ``preset: official`` sets every declared field to its
    official value; what a recipe sets explicitly wins (and is listed)."""

    name: str = Field("feature", description="distillation method (see `ssdistill list`)")
    preset: Literal["ssdistill", "official"] = Field(
        "ssdistill",
        description="official: every switch as the method's official code has it (explicit settings still win and are "
        "recorded as deviations); ssdistill: our defaults",
        json_schema_extra=SELECTS,
        frozen=True,  # applied when the section is built; assigning it later would change nothing
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") == "official" and cls is not MethodConfig:
            values = cls.official_values(data)
            if not values:
                raise ValueError(f"method '{data.get('name')}' has no official code to reproduce; remove method.preset=official")
            data = {**copy.deepcopy(values), **data}
        return data

    @classmethod
    def official_values(cls, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """field -> official value; ``data`` (the raw section) for methods whose official values depend on a mode."""
        return {
            name: extra["official"]
            for name, field in cls.model_fields.items()
            if isinstance(extra := field.json_schema_extra, dict) and "official" in extra
        }

    def inactive(self) -> set[str]:
        """Fields that have no effect under this config (never listed as deviations)."""
        return set()

    def effective(self, field: str) -> Any:
        """The value a field takes in effect (a method may resolve ``None`` defaults here)."""
        return getattr(self, field)

    def deviations(self) -> list[str]:
        """``field: value (official: v)`` for every field in effect that differs from the official code, and
        ``field: value (ssdistill default: d)`` for knobs without an official counterpart set away from our default."""
        official_values = type(self).official_values(self.model_dump())
        if not official_values:
            return []  # a method without official code (a baseline of ours) has nothing to deviate from
        notes, inactive = [], self.inactive()
        for name, field in type(self).model_fields.items():
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            if name == "name" or extra.get("selects") or name in inactive:
                continue
            value = self.effective(name)
            if name in official_values:
                reference, label = official_values[name], "official"
            else:
                reference, label = field.get_default(call_default_factory=True), "ssdistill default"
            if not _same(value, reference):
                notes.append(f"{name}: {_show(value)} ({label}: {_show(reference)})")
        return notes


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):  # relative: 1e-13 is not 0, 0.1 + 0.2 is 0.3
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    return "none" if value is None else str(value)


_TEACHER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _as_items(loggers: Any) -> list:
    """``run.loggers`` in any of its forms (a name, a list, a mapping) as a list of names and one-key mappings."""
    if loggers is None:
        return []
    if isinstance(loggers, str):
        return [loggers]
    if isinstance(loggers, dict):
        return [{name: settings} for name, settings in loggers.items()]
    return list(loggers)


class DistillConfig(Section):
    method: MethodConfig = Field(default_factory=MethodConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    teacher: TeacherConfig = Field(
        default_factory=TeacherConfig, description="the one-teacher shorthand: the teacher named 'teacher'; with teachers, the first of them"
    )
    teachers: dict[str, TeacherConfig] = Field(
        default_factory=dict,
        description="named frozen teachers {name: {same keys as teacher}}; each is built with its own preprocessing, evaluated and "
        "recorded; the first is the primary teacher (default: {teacher: <the teacher section>})",
    )
    aug: AugConfig = Field(default_factory=AugConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @model_validator(mode="before")
    @classmethod
    def renamed_keys(cls, data: Any) -> Any:
        """Keys that moved, at their new place: ``trainer.loggers`` (before 0.2) is ``run.loggers``, so configs and
        run directories written then still load."""
        trainer = data.get("trainer") if isinstance(data, dict) else None
        if isinstance(trainer, dict) and "loggers" in trainer:
            loggers = trainer["loggers"]
            run = dict(data.get("run") or {})
            if loggers:
                run["loggers"] = [*_as_items(run.get("loggers")), *_as_items(loggers)]
            data = {**data, "trainer": {k: v for k, v in trainer.items() if k != "loggers"}, "run": run}
        return data

    @field_validator("method", mode="before")
    @classmethod
    def _method_section_is_resolved(cls, value: Any) -> Any:
        if not isinstance(value, MethodConfig):
            raise ValueError("the method section is resolved by its method's config class: build configs with ssdistill.recipe.build_config")
        return value

    @model_validator(mode="after")
    def _name_the_teachers(self) -> DistillConfig:
        for name in self.teachers:
            if not _TEACHER_NAME.match(name):
                raise ValueError(f"teacher name '{name}' must start with a letter and hold only letters, digits and _")
        if not self.teachers:
            teachers = {SHORTHAND_TEACHER: self.teacher}
        elif "teacher" in self.model_fields_set:
            if SHORTHAND_TEACHER in self.teachers:
                raise ValueError("the teacher named 'teacher' is given twice (teacher and teachers.teacher); keep one")
            teachers = {SHORTHAND_TEACHER: self.teacher, **self.teachers}
        else:
            teachers = dict(self.teachers)
        # derived fields are set without re-validation (and without marking them as given)
        self.__dict__["teachers"] = teachers
        self.__dict__["teacher"] = next(iter(teachers.values()))
        return self

    @property
    def primary_teacher(self) -> str:
        return next(iter(self.teachers))

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data; the teachers appear once (as ``teacher`` when that is the only one, else as
        ``teachers``), so that the dump reads back to the same config."""
        data = self.model_dump(mode="json", serialize_as_any=True)
        if list(self.teachers) == [SHORTHAND_TEACHER]:
            data.pop("teachers")
        else:
            data.pop("teacher")
        return data
