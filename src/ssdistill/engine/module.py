"""The Lightning module every method extends: student, optimiser, schedule, loss logging.

A method subclasses ``DistillMethod`` and provides its ``config_class``, the views its dataset must
return (``train_views``), how it wants the teacher (``teacher_signal``), and ``training_step``.
"""

from __future__ import annotations

from typing import Callable, Literal

import lightning as L
import torch
from ssdistill.cache.signals import TeacherSignal
from ssdistill.config import DistillConfig, MethodConfig
from ssdistill.engine.schedule import warmup_cosine
from ssdistill.losses.queue import KeyQueue, capped_queue_size
from ssdistill.errors import TrainingError
from ssdistill.models.students import Student
from ssdistill.models.teachers import FrozenTeacher


class DistillMethod(L.LightningModule):
    name: str = ""
    config_class: type[MethodConfig] = MethodConfig
    description: str = ""
    multi_teacher: bool = False  # whether the method reads the further teachers of the ``teachers`` config list

    def __init__(
        self,
        cfg: DistillConfig,
        student: Student,
        signal: TeacherSignal | None,
        extra_signals: list[TeacherSignal] | None = None,
        dataset_size: int | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.student = student
        self.dataset_size = dataset_size  # training images (queues are capped to it)
        # plain objects, not submodules: teachers are never in DDP or the checkpoint
        self.signal = signal
        self.extra_signals = list(extra_signals or [])

    # ----- what a method declares -----------------------------------------------------------------
    @classmethod
    def train_views(cls, cfg: DistillConfig, teacher: FrozenTeacher | None) -> dict[str, Callable]:
        raise NotImplementedError

    @classmethod
    def teacher_signal(cls, cfg: DistillConfig) -> Literal["table", "online", "bank", "none"]:
        """``table``: the signal is a pure function of the original view and may be computed once;
        ``online``: the teacher must see the batch's own views; ``bank``: teacher outputs of a cached
        augmentation bank, looked up by ``batch["bank_row"]``; ``none``: no teacher."""
        raise NotImplementedError

    @classmethod
    def train_dataset(cls, cfg: DistillConfig, teacher: FrozenTeacher | None, source, device) -> "torch.utils.data.Dataset | None":
        """A method-specific training dataset (for example neighbour pairs); None = the views of ``train_views``."""
        return None

    @classmethod
    def deviations(cls, cfg: DistillConfig) -> list[str]:
        """Every departure of this config from the method's official code (``MethodConfig.deviations``), recorded
        under ``deviations`` in results.json and shown in the tables and the report."""
        return cfg.method.deviations()

    # ----- shared machinery ------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        for signal in [self.signal, *self.extra_signals]:
            if signal is not None:
                signal.to(self.device)

    def log_loss(self, loss: torch.Tensor, **terms: torch.Tensor) -> torch.Tensor:
        if not torch.isfinite(loss):
            raise TrainingError(
                f"loss became {loss.item()} at step {self.global_step}; lower optim.lr, set optim.grad_clip, or use trainer.precision=32"
            )
        batch_size = self.cfg.data.batch_size
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=True, batch_size=batch_size)
        for key, value in terms.items():
            self.log(f"train/{key}", value.detach(), on_step=True, on_epoch=True, batch_size=batch_size)
        return loss

    def configure_optimizers(self):
        optim = self.cfg.optim
        decay, no_decay = [], []
        for param in self.parameters():
            if param.requires_grad:
                (no_decay if param.ndim <= 1 else decay).append(param)
        groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if optim.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum)
        elif optim.optimizer == "adamw":
            optimizer = torch.optim.AdamW(groups, lr=optim.lr)
        else:
            optimizer = torch.optim.Adam(groups, lr=optim.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        steps_per_epoch = total / max(1, self.cfg.trainer.epochs)
        warmup = int(round(optim.warmup_epochs * steps_per_epoch))
        end = optim.min_lr / optim.lr
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup, total, 1.0, 0.0, end))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.commit_queues()
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)

    def key_queue(self, dim: int) -> KeyQueue:
        """A queue of ``method.queue_size`` keys, capped at the number of training images."""
        requested = self.cfg.method.queue_size
        return KeyQueue(capped_queue_size(requested, self.dataset_size or requested), dim, seed=self.cfg.trainer.seed)

    def commit_queues(self) -> None:
        """Keys staged by the step enter their queues after the optimiser step."""
        for module in self.modules():
            if isinstance(module, KeyQueue):
                module.commit()

