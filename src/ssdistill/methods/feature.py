"""Feature distillation (regression baseline): student backbone + projector regresses the teacher's
embedding of the same image. Where the target comes from (``teacher_view``: original / same / bank) is
described in ``methods/paired.py``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ssdistill.config import DistillConfig
from ssdistill.engine.module import DistillMethod
from ssdistill.losses.regression import center_batch, feature_regression_loss, standardize_batch
from ssdistill.methods.paired import PairedViewConfig, TeacherView, paired_views, signal_kind, student_images_and_target
from ssdistill.models.heads import mlp


class FeatureConfig(PairedViewConfig):
    name: Literal["feature"] = "feature"
    loss: Literal["cosine", "mse", "smooth_l1"] = Field("cosine", description="regression loss")
    projector_hidden: list[int] = Field(
        default_factory=lambda: [2048], description="hidden widths of the student projector ([] = one linear layer)"
    )
    target_norm: Literal["center", "batch", "none"] = Field(
        "center",
        description="teacher targets before the loss: center = minus batch mean, batch = per-dimension standardised, none = raw",
    )
    teacher_view: TeacherView = Field(
        "original",
        description="teacher target from the original view (cacheable), the student's own augmented crop (online), "
        "or a cached augmentation bank of bank_repeats crops per image (approximation)",
    )


class FeatureDistillation(DistillMethod):
    name = "feature"
    config_class = FeatureConfig
    description = "feature regression: student + projector regresses the teacher embedding (cosine / MSE / smooth-L1)"

    def __init__(self, cfg, student, signal, **context) -> None:
        super().__init__(cfg, student, signal, **context)
        self.projector = mlp([student.dim, *cfg.method.projector_hidden, signal.dim], bn="hidden")

    @classmethod
    def teacher_signal(cls, cfg: DistillConfig) -> str:
        return signal_kind(cfg.method.teacher_view)

    @classmethod
    def train_views(cls, cfg: DistillConfig, teacher) -> dict:
        return paired_views(cfg, teacher, cfg.method.teacher_view)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        images, target = student_images_and_target(batch, self.signal, self.cfg.student.resolution)
        if self.cfg.method.target_norm == "batch":
            target = standardize_batch(target)
        elif self.cfg.method.target_norm == "center":
            target = center_batch(target)
        prediction = self.projector(self.student(images))
        loss = feature_regression_loss(prediction, target, self.cfg.method.loss)
        return self.log_loss(loss)
