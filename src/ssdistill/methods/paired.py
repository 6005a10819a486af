"""Where the teacher's target comes from when the student sees one augmented view per image (shared by the
feature, SEED and DisCo methods):

``original``: the teacher's embedding of the non-augmented original view, a pure function of the image,
computed once (teacher cache); ``same``: the teacher runs online on the very crop the student sees (rendered at
the teacher's resolution and downsampled for the student); ``bank``: the same pairing read from a cached bank of
``bank_repeats`` augmented views per image, each replayed for the student at its own resolution (cheap, but only
R augmentations per image, so it is recorded as an approximation).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch.nn import functional as F

from ssdistill.config import DistillConfig, MethodConfig
from ssdistill.data.views import augmented_view, original_view

TeacherView = Literal["original", "same", "bank"]


class PairedViewConfig(MethodConfig):
    """Config fields of methods with one student view paired with a teacher target (a subclass declares its
    ``teacher_view`` field)."""

    bank_repeats: int = Field(8, gt=0, description="augmented views per image in the teacher bank (teacher_view=bank)")

    def inactive(self) -> set[str]:
        return set() if self.teacher_view == "bank" else {"bank_repeats"}


def signal_kind(teacher_view: str) -> str:
    return {"original": "table", "same": "online", "bank": "bank"}[teacher_view]


def paired_views(cfg: DistillConfig, teacher, teacher_view: str) -> dict:
    pre = teacher.preprocess
    if teacher_view == "bank":
        return {}  # the bank's own dataset renders the student's views (cache/bank.py)
    if teacher_view == "same":
        return {"shared": augmented_view(pre.resolution, cfg.aug, pre.interpolation)}
    views = {"student": augmented_view(cfg.student.resolution, cfg.aug)}
    if not cfg.teacher.precompute:
        views["teacher"] = original_view(pre.resolution, pre.crop_pct, pre.interpolation)
    return views


def student_images_and_target(batch: dict, signal, student_resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's input batch and the teacher's [B, D] target for it (no gradient)."""
    views, index = batch["views"], batch["index"]
    if "shared" in views:
        teacher_images = views["shared"]
        size = (student_resolution, student_resolution)
        student_images = F.interpolate(teacher_images, size=size, mode="bilinear", antialias=True, align_corners=False)
    else:
        student_images, teacher_images = views["student"], views.get("teacher")
    return student_images, signal(batch.get("bank_row", index), teacher_images).detach()
