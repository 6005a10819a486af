"""The Lightning module every method extends: students, optimiser, schedule, loss logging.

A method subclasses ``DistillMethod`` and declares, as data, what it needs from the run:

- ``teacher_needs(cfg)``: {signal name: ``TeacherNeed``} (which named teacher, which view, which tap); the engine's
  provider fulfils them and the module receives ``signals`` by the same names;
- ``student_members(cfg)``: {member name: ``StudentConfig``} (default one member, ``student``); each member is a
  submodule of that name, evaluated, monitored and exported by name;
- ``train_views(cfg, ctx)``: the views its dataset renders, or ``prepare(cfg, ctx)``: a dataset of its own, built
  with the provider's cache-backed helpers (neighbours, k-means, banks);
- ``batch_layout(cfg, ctx)``: what one item of that dataset holds (view names and resolutions, extra keys);
- the engine adds, for every run with ``trainer.ema_momentum``, an EMA copy of each trained member (``ema_member``),
  updated after every optimiser step and evaluated as its own row; the engine reads the members through ``run_members``
  and ``run_copies``;
- optionally ``training_source`` / ``evaluation_source`` (images of its own, for example the union of CKA's task
  folders), ``member_classifiers`` (classifiers to score) and ``extra_evaluation`` (results only it can compute);

and implements ``training_step``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import lightning as L
import torch

from ssdistill.cache.signals import TeacherSignal
from ssdistill.config import DistillConfig, MethodConfig, StudentConfig
from ssdistill.data.sampling import seed_everything_from
from ssdistill.distributed import rank
from ssdistill.engine.contract import BatchLayout, Preparation, TeacherNeed
from ssdistill.engine.schedule import warmup_cosine
from ssdistill.errors import TrainingError
from ssdistill.labels import ENSEMBLE, PRIMARY_STUDENT, ema_member
from ssdistill.losses.queue import KeyQueue
from ssdistill.models.students import Student

if TYPE_CHECKING:  # the provider is the context methods prepare their data with
    from ssdistill.data.datasets import ImageSource
    from ssdistill.engine.provider import TeacherProvider


@torch.no_grad()
def ema_update(target: torch.nn.Module, online: torch.nn.Module, momentum: float) -> None:
    """``target <- m target + (1 - m) online`` over parameters and floating buffers (BatchNorm statistics): the copy is
    never run during training, so its statistics must follow the online model's too; integer buffers are copied."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.lerp_(o.detach().to(t.dtype), 1.0 - momentum)  # the copy may be wider (float32 beside 16-bit weights: keep_ema_wide)
    for t, o in zip(target.buffers(), online.buffers(), strict=True):
        if t.is_floating_point():
            t.lerp_(o.to(t.dtype), 1.0 - momentum)
        else:
            t.copy_(o)


# Lightning precisions that convert the whole module (weights and all) to another dtype than float32
WHOLE_MODULE_PRECISIONS = ("bf16-true", "16-true", "64-true")


def cast_inputs_to_weights(module: torch.nn.Module) -> None:
    """Every layer of ``module`` with weights of its own takes its floating inputs in its weights' dtype: under
    trainer.precision=bf16-true (16-true, 64-true) Lightning converts the module and the batch, but teacher signals
    (float32 tables and outputs) reach heads and adapters as they are, and a float32 input to a bfloat16 layer is an
    error. Once per module (the hooks stay: the evaluation converts the module back to float32, where they do nothing)."""
    if getattr(module, "_inputs_cast", False):
        return
    for layer in module.modules():
        if next(layer.parameters(recurse=False), None) is not None:
            layer.register_forward_pre_hook(_cast_to_weights)
    module._inputs_cast = True


def _cast_to_weights(layer: torch.nn.Module, args: tuple) -> tuple:
    dtype = next(layer.parameters(recurse=False)).dtype
    return tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() and a.dtype != dtype else a for a in args)


class DistillMethod(L.LightningModule):
    name: str = ""
    config_class: type[MethodConfig] = MethodConfig
    description: str = ""
    label: str = ""  # display name in tables (default: name)

    def __init__(
        self,
        cfg: DistillConfig,
        students: dict[str, Student] | Student,
        signals: dict[str, TeacherSignal] | None = None,
        dataset_size: int | None = None,
        prepared: dict[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        if isinstance(students, Student):
            students = {PRIMARY_STUDENT: students}
        self.member_names = list(students)
        for member, student in students.items():
            if member == ENSEMBLE:
                raise TrainingError(f"student member name '{ENSEMBLE}' is reserved for the cohort's ensemble row; rename it")
            if hasattr(self, member):
                raise TrainingError(f"student member name '{member}' clashes with an attribute of {type(self).__name__}; rename it")
            self.add_module(member, student)  # checkpoint keys: "<member>.backbone...."
        self.dataset_size = dataset_size  # training images (queues are capped to it)
        # plain objects, not submodules: teachers are never in DDP or the checkpoint
        self.signals: dict[str, TeacherSignal] = dict(signals or {})
        self.prepared: dict[str, torch.Tensor] = dict(prepared or {})  # the tensors of ``prepare`` (Preparation.tensors)

    def students(self) -> dict[str, Student]:
        """The trainable students by member name (evaluation, k-NN monitor, checkpoint loading and export use it)."""
        return {member: getattr(self, member) for member in self.member_names}

    def member_classifiers(self) -> dict[str, torch.nn.Module]:
        """{member: classifier on its pooled features} for a method that trains classifiers (supervised MCL); the
        evaluation scores each on the evaluation split (``classifier`` top-1). Default: none."""
        return {}

    @classmethod
    def classifiers_from_checkpoint(cls, cfg: DistillConfig, state: dict) -> dict[str, torch.nn.Module]:
        """``member_classifiers`` rebuilt from a checkpoint's state dict, so that ``ssdistill eval`` scores them again
        (the method reads its own keys). Default: none."""
        return {}

    # ----- what a method declares -----------------------------------------------------------------
    @classmethod
    def copied_members(cls, cfg: DistillConfig) -> dict[str, str]:
        """{member: the member it copies}: members that start as an exact copy of another and are not trained by the
        optimiser (an EMA copy the method updates itself); they are evaluated, but have no random-init row and are not
        part of the cohort ensemble. Default: none."""
        return {}

    @classmethod
    def ema_sources(cls, cfg: DistillConfig) -> list[str]:
        """The members the engine keeps an EMA copy of (``trainer.ema_momentum``): every trained member."""
        if not cfg.trainer.ema:
            return []
        copies = cls.copied_members(cfg)
        return [member for member in cls.student_members(cfg) if member not in copies]

    @classmethod
    def run_members(cls, cfg: DistillConfig) -> dict[str, StudentConfig]:
        """Every student member of a run, as the engine builds, evaluates and exports them: the method's own
        (``student_members``), then the engine's EMA copies."""
        members = dict(cls.student_members(cfg))
        for source in cls.ema_sources(cfg):
            if ema_member(source) in members:
                raise TrainingError(
                    f"student member '{ema_member(source)}' clashes with the EMA copy of '{source}' (trainer.ema_momentum); rename it"
                )
            members[ema_member(source)] = members[source]
        return members

    @classmethod
    def run_copies(cls, cfg: DistillConfig) -> dict[str, str]:
        """{member: the member it copies} of a run: the method's own (``copied_members``) and the engine's EMA copies."""
        return {**cls.copied_members(cfg), **{ema_member(source): source for source in cls.ema_sources(cfg)}}

    @classmethod
    def teacher_needs(cls, cfg: DistillConfig) -> dict[str, TeacherNeed]:
        """{signal name: need}; empty for a method without a teacher."""
        raise NotImplementedError

    @classmethod
    def student_members(cls, cfg: DistillConfig) -> dict[str, StudentConfig]:
        return {PRIMARY_STUDENT: cfg.student}

    @classmethod
    def train_views(cls, cfg: DistillConfig, ctx: TeacherProvider) -> dict[str, Callable]:
        """{view name: view recipe} of the default dataset (``IndexedViews``); the provider adds the views its online
        signals read."""
        raise NotImplementedError

    @classmethod
    def training_source(cls, cfg: DistillConfig, open_split: Callable[[str], ImageSource]) -> ImageSource | None:
        """The training images when the method defines them itself (CKA: the union of its tasks' data, each image
        tagged with its part); None = ``data.train``. ``open_split(spec)`` opens a folder or dataset name."""
        return None

    @classmethod
    def evaluation_source(cls, cfg: DistillConfig, open_split: Callable[[str], ImageSource]) -> ImageSource | None:
        """The labelled evaluation images when ``data.val`` is not given and the method defines them (CKA: the union of
        its tasks' evaluation splits); None = no evaluation split."""
        return None

    def extra_evaluation(self, ctx: TeacherProvider, initial: dict[str, Student] | None = None) -> dict[str, object]:
        """Evaluation only this method can make, after the common one (CKA: per-task clustering scores of its heads),
        merged into results.json by section name; ``initial``: the random-init students (None when not evaluated)."""
        return {}

    @classmethod
    def prepare(cls, cfg: DistillConfig, ctx: TeacherProvider) -> Preparation | None:
        """The preparation hook, run once before training with the provider as context: a method-specific training
        dataset (for example neighbour pairs) and/or tensors computed from the cache; None = nothing to prepare (the
        engine's default dataset: the views of ``train_views``, or the bank's views)."""
        return None

    @classmethod
    def batch_layout(cls, cfg: DistillConfig, ctx: TeacherProvider) -> BatchLayout | None:
        """What one item of the dataset of ``prepare`` holds (given the method's fulfilled signals); None for
        the engine's default dataset, whose layout the engine knows (``engine.datasets.layout``)."""
        return None

    @classmethod
    def deviations(cls, cfg: DistillConfig) -> list[str]:
        """Every departure of this config from the method's official code (``MethodConfig.deviations``), recorded
        under ``deviations`` in results.json and shown in the tables and the report."""
        return cfg.method.deviations()

    # ----- shared machinery ------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        for signal in self.signals.values():
            signal.to(self.device)
        self.prepared = {key: value.to(self.device) for key, value in self.prepared.items()}
        self.keep_ema_wide()
        if self._trainer is not None and self.trainer.precision in WHOLE_MODULE_PRECISIONS:
            cast_inputs_to_weights(self)

    def keep_ema_wide(self) -> None:
        """The engine's EMA copies in float32 when Lightning converted the module to 16 bits (trainer.precision=bf16-true
        or 16-true): in bfloat16 an update of (1 - m) = 0.1 % of a weight's distance to the online weight is below the
        format's resolution and would round away, leaving the copy frozen. The copies are never trained or run during
        training, so nothing else sees their dtype; a resumed run takes them back from the checkpoint at full width
        (Lightning loads it before the conversion)."""
        restored = getattr(self, "_ema_checkpoint", {})
        for source in type(self).ema_sources(self.cfg):
            member = ema_member(source)
            target = getattr(self, member)
            if any(p.dtype in (torch.float16, torch.bfloat16) for p in target.parameters()):
                target.float()
                prefix = f"{member}."
                state = {key[len(prefix) :]: value for key, value in restored.items() if key.startswith(prefix)}
                if state:
                    target.load_state_dict(state)
        self._ema_checkpoint = {}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """The EMA copies' tensors of a resumed checkpoint, for ``keep_ema_wide``."""
        prefixes = tuple(f"{ema_member(source)}." for source in type(self).ema_sources(self.cfg))
        self._ema_checkpoint = {k: v for k, v in checkpoint.get("state_dict", {}).items() if prefixes and k.startswith(prefixes)}

    def log_loss(self, loss: torch.Tensor, **terms: torch.Tensor) -> torch.Tensor:
        if not torch.isfinite(loss):
            raise TrainingError(
                f"loss became {loss.item()} at step {self.global_step}; lower optim.lr, set optim.grad_clip, or use trainer.precision=32"
            )
        batch_size = self.cfg.data.batch_size
        # under DDP the logged loss and terms are the mean over the processes (the global batch's), not rank 0's share;
        # a method whose step may log other terms on other processes (teacher drop: a sync needs the same keys on every
        # process, in the same order) logs rank 0's terms, declared so (rank_zero_only: no collective, and Lightning
        # does not suggest sync_dist)
        sync = self._trainer is not None and self.trainer.world_size > 1
        own = sync and self.terms_differ_across_ranks()
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=True, batch_size=batch_size, sync_dist=sync)
        for key, value in terms.items():
            self.log(f"train/{key}", value.detach(), on_step=True, on_epoch=True, batch_size=batch_size, sync_dist=sync, rank_zero_only=own)
        return loss

    def terms_differ_across_ranks(self) -> bool:
        """Whether the loss terms a step logs (``log_loss``'s keywords) may differ from one DDP process to another in
        the same step. Default: no, every process logs the same terms."""
        return False

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Never save a diverged run: a non-finite weight stops training before the checkpoint is written, so the last
        checkpoint stays the last good state."""
        for name, tensor in self.state_dict().items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise TrainingError(
                    f"weight {name} became non-finite by step {self.global_step}; nothing was saved (the last checkpoint is the "
                    "last good state): lower optim.lr, set optim.grad_clip, or use trainer.precision=32"
                )

    def optimised_parameters(self) -> Iterator[torch.nn.Parameter]:
        """The parameters the run's optimiser steps. Default: all of them (a method that steps some with an optimiser
        of its own, as L-MCL's weighting network, leaves those out)."""
        return self.parameters()

    def configure_optimizers(self):
        optim = self.cfg.optim
        decay, no_decay = [], []
        for param in self.optimised_parameters():
            if param.requires_grad:
                (no_decay if param.ndim <= 1 else decay).append(param)
        groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if optim.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum, nesterov=optim.nesterov)
        elif optim.optimizer == "adamw":
            optimizer = torch.optim.AdamW(groups, lr=optim.lr)
        else:
            optimizer = torch.optim.Adam(groups, lr=optim.lr)
        # the run sets batches_per_epoch: asking the trainer to estimate the steps would make Lightning build the data
        # iterator before a resumed run's loader state is restored (ResumableLoader); a partial last accumulation
        # cycle of an epoch is an optimiser step too
        batches = getattr(self, "batches_per_epoch", None)
        per_epoch = -(-batches() // self.cfg.trainer.accumulate_grad_batches) if batches else None
        total = max(1, per_epoch * self.cfg.trainer.epochs if per_epoch else int(self.trainer.estimated_stepping_batches))
        self.planned_steps = total  # the EMA copy's momentum when its time constant is a share of the run
        steps_per_epoch = total / max(1, self.cfg.trainer.epochs)
        warmup = int(round(optim.warmup_epochs * steps_per_epoch))
        end = optim.min_lr / optim.lr
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup, total, 1.0, 0.0, end))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    planned_steps = 1  # optimiser steps of the whole run (configure_optimizers)
    micro_batch = 0  # index of the current batch inside its optimiser step (trainer.accumulate_grad_batches)
    batches_trained = 0  # batches of this process in this attempt (for images/s)

    def on_train_batch_start(self, batch, batch_idx) -> None:
        """The step's random draws (cutmix, teacher drop, ...) come from (seed, step, micro-batch, rank): the same in a
        resumed run. With gradient accumulation an optimiser step spans several batches, each with its own draws."""
        accumulate = self.cfg.trainer.accumulate_grad_batches
        self.micro_batch = batch_idx % accumulate
        seed_everything_from(self.cfg.trainer.seed, self.global_step * accumulate + self.micro_batch, rank(), 1)

    @property
    def opens_optimiser_step(self) -> bool:
        """True on the first batch of an optimiser step: where a momentum encoder takes its once-per-step update."""
        return self.micro_batch == 0

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self.after_optimiser_step()

    def after_optimiser_step(self) -> None:
        """Once per optimiser step, right after it (before any checkpoint of that step is written): the keys staged by
        every batch of the step enter their queues together, so all batches of one step saw the same queue; the
        engine's EMA copies (``trainer.ema_momentum``) take the step's update."""
        for module in self.modules():
            if isinstance(module, KeyQueue):
                module.commit()
        momentum = self.cfg.trainer.ema_momentum_for(self.planned_steps)
        for source in type(self).ema_sources(self.cfg):  # the engine's EMA copies follow the step just taken
            ema_update(getattr(self, ema_member(source)), getattr(self, source), momentum)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.batches_trained += 1
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)
