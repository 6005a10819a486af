"""Feature distillation (regression baseline): student backbone + projector regresses the teacher's
embedding of the same image.

``teacher_view: original`` (default): the student sees an augmented view, the target is the teacher's
embedding of the non-augmented original view, a pure function of the image, so it is computed once.
``teacher_view: same``: the teacher runs online on the very crop the student sees (rendered at the
teacher's resolution and downsampled for the student), which is costlier but matches views exactly.
``teacher_view: bank``: the same pairing, read from a cached bank of ``bank_repeats`` augmented views per
image (each replayed for the student at its own resolution); cheap, but only R augmentations per image.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch.nn import functional as F

from ssdistill.config import DistillConfig, MethodConfig
from ssdistill.data.views import augmented_view, original_view
from ssdistill.engine.module import DistillMethod
from ssdistill.losses.regression import center_batch, feature_regression_loss, standardize_batch
from ssdistill.models.heads import mlp


class FeatureConfig(MethodConfig):
    name: Literal["feature"] = "feature"
    loss: Literal["cosine", "mse", "smooth_l1"] = Field("cosine", description="regression loss")
    projector_hidden: list[int] = Field(
        default_factory=lambda: [2048], description="hidden widths of the student projector ([] = one linear layer)"
    )
    target_norm: Literal["center", "batch", "none"] = Field(
        "center",
        description="teacher targets before the loss: center = minus batch mean, batch = per-dimension standardised, none = raw",
    )
    teacher_view: Literal["original", "same", "bank"] = Field(
        "original",
        description="teacher target from the original view (cacheable), the student's own augmented crop (online), "
        "or a cached augmentation bank of bank_repeats crops per image (approximation)",
    )
    bank_repeats: int = Field(8, gt=0, description="augmented views per image in the teacher bank (teacher_view=bank)")


class FeatureDistillation(DistillMethod):
    name = "feature"
    config_class = FeatureConfig
    description = "feature regression: student + projector regresses the teacher embedding (cosine / MSE / smooth-L1)"

    def __init__(self, cfg, student, signal, extra_signals=None) -> None:
        super().__init__(cfg, student, signal, extra_signals)
        self.projector = mlp([student.dim, *cfg.method.projector_hidden, signal.dim], bn="hidden")

    @classmethod
    def teacher_signal(cls, cfg: DistillConfig) -> str:
        return {"original": "table", "same": "online", "bank": "bank"}[cfg.method.teacher_view]

    @classmethod
    def train_views(cls, cfg: DistillConfig, teacher) -> dict:
        pre = teacher.preprocess
        if cfg.method.teacher_view == "bank":
            return {}  # the bank's own dataset renders the student's views (cache/bank.py)
        if cfg.method.teacher_view == "same":
            return {"shared": augmented_view(pre.resolution, cfg.aug, pre.interpolation)}
        views = {"student": augmented_view(cfg.student.resolution, cfg.aug)}
        if not cfg.teacher.precompute:
            views["teacher"] = original_view(pre.resolution, pre.crop_pct, pre.interpolation)
        return views

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        views, index = batch["views"], batch["index"]
        if "shared" in views:
            teacher_images = views["shared"]
            size = self.cfg.student.resolution
            student_images = F.interpolate(teacher_images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        else:
            student_images, teacher_images = views["student"], views.get("teacher")
        target = self.signal(batch.get("bank_row", index), teacher_images)
        if self.cfg.method.target_norm == "batch":
            target = standardize_batch(target)
        elif self.cfg.method.target_norm == "center":
            target = center_batch(target)
        prediction = self.projector(self.student(student_images))
        loss = feature_regression_loss(prediction, target, self.cfg.method.loss)
        return self.log_loss(loss)
