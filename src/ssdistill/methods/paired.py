"""Where the teacher's target comes from when the student sees one augmented view per image (shared by the
feature, SEED and DisCo methods):

``original``: the teacher's embedding of the non-augmented original view, a pure function of the image,
computed once (teacher cache); ``same``: the teacher runs online on the very crop the student sees (rendered at
the teacher's resolution and downsampled for the student); ``bank``: the same pairing read from a cached bank of
``bank_repeats`` augmented views per image, each replayed for the student at its own resolution (cheap, but only
R augmentations per image, so it is recorded as an approximation).

``teacher_view`` is decoded once, into a ``Pairing`` (``PairedViewConfig.pairing``): the teacher need's view and
whether the student's crop is shared with the online teacher; the need, the dataset's views, the student's images and
the teacher's target of a batch all follow from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field
from torch.nn import functional as F

from ssdistill.config import DistillConfig, MethodConfig
from ssdistill.data.views import augmented_view
from ssdistill.engine.contract import TeacherNeed
from ssdistill.engine.contract import TeacherView as NeedView

TeacherView = Literal["original", "same", "bank"]


@dataclass(frozen=True)
class Pairing:
    """One ``teacher_view``, decoded: ``need_view``, the view of the teacher need (original, augmented, bank); ``shared``,
    whether the teacher runs online on the student's very crop (``same``: the dataset renders one ``shared`` crop at
    the sharpest teacher's resolution, which the student sees downsampled)."""

    need_view: NeedView
    shared: bool = False

    def views(self, cfg: DistillConfig, ctx) -> dict:
        """The views the dataset renders for the student (and, shared, for the online teachers)."""
        if self.need_view == "bank":
            return {}  # the bank's own dataset renders the student's views (cache/bank.py)
        if self.shared:  # rendered for the sharpest teacher; the others and the student resize it
            pre = max((ctx.teacher(name).preprocess for name in cfg.teachers), key=lambda p: p.resolution)
            return {"shared": augmented_view(pre.resolution, cfg.aug, pre.interpolation)}
        return {"student": augmented_view(cfg.student.resolution, cfg.aug)}

    def student_images(self, batch: dict, student_resolution: int) -> torch.Tensor:
        """The student's input batch: its own view, or the shared crop downsampled to its resolution."""
        views = batch["views"]
        if not self.shared:
            return views["student"]
        size = (student_resolution, student_resolution)
        return F.interpolate(views["shared"], size=size, mode="bilinear", antialias=True, align_corners=False)

    def target(self, batch: dict, signal) -> torch.Tensor:
        """The teacher's [B, D] target for the student's crop (no gradient): online on the shared crop, else looked up
        (a table row, a bank row, or online on the original view the dataset adds)."""
        if self.shared:
            return signal(batch["index"], batch["views"]["shared"]).detach()
        return signal.for_batch(batch).detach()


PAIRINGS: dict[str, Pairing] = {"original": Pairing("original"), "same": Pairing("augmented", shared=True), "bank": Pairing("bank")}


class PairedViewConfig(MethodConfig):
    """Config fields of methods with one student view paired with a teacher target (a subclass declares its
    ``teacher_view`` field)."""

    bank_repeats: int = Field(8, gt=0, description="augmented views per image in the teacher bank (teacher_view=bank)")

    @property
    def pairing(self) -> Pairing:
        """``teacher_view``, decoded."""
        return PAIRINGS[self.teacher_view]

    def inactive(self) -> set[str]:
        return set() if self.pairing.need_view == "bank" else {"bank_repeats"}


def paired_need(cfg: PairedViewConfig, teacher: str | None = None) -> TeacherNeed:
    """The need of one teacher's target under ``cfg.teacher_view``."""
    view = cfg.pairing.need_view
    return TeacherNeed(view, teacher, repeats=cfg.bank_repeats if view == "bank" else None)
