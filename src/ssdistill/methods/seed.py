"""SEED (METHODS 3.9): the student matches the teacher's similarity distribution over a queue of teacher
embeddings. Both networks see the same augmented view; s = n(head(student(x))), t = n(teacher(x)); the student's
logits [<s, t>, s Qᵀ] / τ_s are trained towards softmax([<t, t>, t Qᵀ] / τ_t) by soft cross-entropy; then t enters
the queue. The head's output is as wide as the teacher's embedding. Where the teacher's view comes from
(``teacher_view``: same / bank / original) is described in ``methods/paired.py``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch.nn import functional as F

from ssdistill.config import DistillConfig
from ssdistill.engine.module import DistillMethod
from ssdistill.losses.infonce import similarity_distribution_loss
from ssdistill.methods.paired import PairedViewConfig, TeacherView, paired_views, signal_kind, student_images_and_target
from ssdistill.models.heads import mlp


class SEEDConfig(PairedViewConfig):
    name: Literal["seed"] = "seed"
    head_hidden: list[int] | None = Field(None, description="hidden widths of the head (default: one layer as wide as the backbone)")
    queue_size: int = Field(65536, gt=0, description="teacher embeddings kept in the queue (capped at the number of training images)")
    student_temperature: float = Field(0.2, gt=0, description="τ_s of the student's similarity logits")
    teacher_temperature: float = Field(1e-4, gt=0, description="τ_t of the teacher's target distribution (very sharp, as published)")
    teacher_view: TeacherView = Field(
        "same", description="same: teacher online on the student's crop (paper); bank: cached augmentation bank; original: cached original view"
    )


class SEED(DistillMethod):
    name = "seed"
    config_class = SEEDConfig
    description = "SEED: soft cross-entropy between student and teacher similarity distributions over a teacher queue"

    def __init__(self, cfg, student, signal, **context) -> None:
        super().__init__(cfg, student, signal, **context)
        m = cfg.method
        hidden = m.head_hidden if m.head_hidden is not None else [student.dim]
        self.head = mlp([student.dim, *hidden, signal.dim], bn="none")
        self.queue = self.key_queue(signal.dim)

    @classmethod
    def teacher_signal(cls, cfg: DistillConfig) -> str:
        return signal_kind(cfg.method.teacher_view)

    @classmethod
    def train_views(cls, cfg: DistillConfig, teacher) -> dict:
        return paired_views(cfg, teacher, cfg.method.teacher_view)

    @classmethod
    def deviations(cls, cfg: DistillConfig) -> list[str]:
        return ["teacher_view: original (teacher embedding of the non-augmented image)"] if cfg.method.teacher_view == "original" else []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        m = self.cfg.method
        images, target = student_images_and_target(batch, self.signal, self.cfg.student.resolution)
        s = F.normalize(self.head(self.student(images)), dim=1)
        t = F.normalize(target.float(), dim=1)
        own = self.queue.same_image(batch["index"])  # older entries of the same image are left out of both distributions
        loss = similarity_distribution_loss(s, t, self.queue.keys, m.student_temperature, m.teacher_temperature, exclude=own)
        self.queue.stage(t, batch["index"])
        return self.log_loss(loss)
