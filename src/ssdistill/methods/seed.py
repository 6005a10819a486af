"""SEED (docs/methods/baselines.md): the student matches the teacher's similarity distribution over a queue of teacher
embeddings. Both networks see the same augmented view; s = n(head(student(x))), t = n(teacher(x)); the student's
logits [<s, t>, s Qᵀ] / τ_s are trained towards softmax([<t, t>, t Qᵀ] / τ_t) by soft cross-entropy; then t enters
the queue (older entries of the same image stay in both distributions unless ``mask_same_id``, as in the official
code). The head's output is as wide as the teacher's embedding. Where the teacher's view comes from
(``teacher_view``: same / bank / original) is described in ``methods/paired.py``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch.nn import functional as F

from ssdistill.config import DistillConfig, official
from ssdistill.engine.module import DistillMethod
from ssdistill.losses.infonce import similarity_distribution_loss
from ssdistill.methods.paired import PairedViewConfig, TeacherView, paired_need
from ssdistill.methods.queued import QueueConfig, excluded_keys, key_queue
from ssdistill.models.heads import mlp


class SEEDConfig(PairedViewConfig, QueueConfig):
    name: Literal["seed"] = "seed"
    head_hidden: list[int] | None = Field(
        None, description="hidden widths of the head (default: one layer as wide as the backbone)", json_schema_extra=official(None)
    )
    student_temperature: float = Field(0.2, gt=0, description="τ_s of the student's similarity logits", json_schema_extra=official(0.2))
    teacher_temperature: float = Field(
        1e-4, gt=0, description="τ_t of the teacher's target distribution (very sharp, as published)", json_schema_extra=official(1e-4)
    )
    teacher_view: TeacherView = Field(
        "same",
        description="same: teacher online on the student's crop (paper); bank: cached augmentation bank; original: cached original view",
        json_schema_extra=official("same"),
    )


class SEED(DistillMethod):
    name = "seed"
    config_class = SEEDConfig
    description = "SEED: soft cross-entropy between student and teacher similarity distributions over a teacher queue"

    def __init__(self, cfg, students, signals, **context) -> None:
        super().__init__(cfg, students, signals, **context)
        m, student = cfg.method, self.student
        self.signal = self.signals["teacher"]
        hidden = m.head_hidden if m.head_hidden is not None else [student.dim]
        self.head = mlp([student.dim, *hidden, self.signal.dim], bn="none")
        self.queue = key_queue(m, self.signal.dim, self.dataset_size, cfg.trainer.seed)

    @classmethod
    def teacher_needs(cls, cfg: DistillConfig) -> dict:
        return {"teacher": paired_need(cfg.method)}

    @classmethod
    def train_views(cls, cfg: DistillConfig, ctx) -> dict:
        return cfg.method.pairing.views(cfg, ctx)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        m = self.cfg.method
        pairing = m.pairing
        images, target = pairing.student_images(batch, self.cfg.student.resolution), pairing.target(batch, self.signal)
        s = F.normalize(self.head(self.student(images)), dim=1)
        t = F.normalize(target.float(), dim=1)
        own = excluded_keys(m, self.queue, batch["index"])
        loss = similarity_distribution_loss(s, t, self.queue.keys, m.student_temperature, m.teacher_temperature, exclude=own)
        self.queue.stage(t, batch["index"])
        return self.log_loss(loss)
