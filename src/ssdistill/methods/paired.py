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
from ssdistill.data.views import augmented_view
from ssdistill.engine.contract import TeacherNeed

TeacherView = Literal["original", "same", "bank"]


class PairedViewConfig(MethodConfig):
    """Config fields of methods with one student view paired with a teacher target (a subclass declares its
    ``teacher_view`` field)."""

    bank_repeats: int = Field(8, gt=0, description="augmented views per image in the teacher bank (teacher_view=bank)")

    def inactive(self) -> set[str]:
        return set() if self.teacher_view == "bank" else {"bank_repeats"}


def paired_need(cfg: PairedViewConfig, teacher: str | None = None) -> TeacherNeed:
    """The need of one teacher's target under ``cfg.teacher_view``."""
    if cfg.teacher_view == "bank":
        return TeacherNeed("bank", teacher, repeats=cfg.bank_repeats)
    return TeacherNeed("augmented" if cfg.teacher_view == "same" else "original", teacher)


def paired_views(cfg: DistillConfig, ctx, teacher_view: str) -> dict:
    if teacher_view == "bank":
        return {}  # the bank's own dataset renders the student's views (cache/bank.py)
    if teacher_view == "same":  # rendered for the sharpest teacher; the others and the student resize it
        pre = max((ctx.teacher(name).preprocess for name in cfg.teachers), key=lambda p: p.resolution)
        return {"shared": augmented_view(pre.resolution, cfg.aug, pre.interpolation)}
    return {"student": augmented_view(cfg.student.resolution, cfg.aug)}


def student_images(batch: dict, student_resolution: int) -> torch.Tensor:
    """The student's input batch: its own view, or the shared crop downsampled to its resolution."""
    views = batch["views"]
    if "shared" not in views:
        return views["student"]
    size = (student_resolution, student_resolution)
    return F.interpolate(views["shared"], size=size, mode="bilinear", antialias=True, align_corners=False)


def paired_target(batch: dict, signal) -> torch.Tensor:
    """The teacher's [B, D] target for the student's crop (no gradient): online on the shared crop, else looked up."""
    if signal.online and signal.batch_view is None:
        return signal(batch["index"], batch["views"]["shared"]).detach()
    return signal.for_batch(batch).detach()
