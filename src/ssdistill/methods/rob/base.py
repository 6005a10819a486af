"""What one base of RoB provides (``RoBBase``): the student's head over the targets, its outputs, the loss of its
crops' outputs against the teacher's targets, and anything it prepares before training. ``PrototypeBase`` holds what
DINO and MSN share: a bottleneck head scored against K prototypes (the student's own, or the target's columns, frozen)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ssdistill.methods.rob.config import RoBConfig
from ssdistill.models.heads import mlp


class RoBBase:
    """One joint-embedding method whose target branch the teacher replaces (``method.base``). ``module`` below is the
    RoB method module (methods/rob/method.py), whose attributes (head, prototypes, centre) are its checkpoint's keys."""

    local_crops = True  # whether the student also sees ``local_crops`` local crops besides the two global ones

    def __init__(self, m: RoBConfig) -> None:
        self.m = m

    @property
    def patch_drop(self) -> float:
        """Share of patch tokens dropped from the global crops of ViT students (MSN's masked anchors)."""
        return 0.0

    def head(self, dim: int, width: int, columns: torch.Tensor | None) -> nn.Module:
        """The student's head from its ``dim``-d features towards the ``width`` targets (``columns``: the target's
        [D, K] columns, when it has them)."""
        raise NotImplementedError

    def add_parameters(self, module: nn.Module, width: int) -> None:
        """Parameters and buffers of this base besides the head, added to the method module (its checkpoint names)."""

    def outputs(self, module: nn.Module, out: torch.Tensor) -> torch.Tensor:
        """The student's outputs over the targets from its head's output ``out``."""
        return out

    def loss(self, module: nn.Module, outputs: list[torch.Tensor], targets: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """(loss, named terms to log) of the student's ``outputs`` on every crop (the global ones first) against the
        teacher's ``targets`` on the two global crops."""
        raise NotImplementedError

    def prepare(self, ctx, tensors: dict[str, torch.Tensor], global_view, bank_table: torch.Tensor | None) -> None:
        """Add to ``tensors`` what this base computes before training (``global_view``: the teacher's global crop when
        it runs online; ``bank_table``: the bank's teacher outputs otherwise)."""


class PrototypeBase(RoBBase):
    """DINO and MSN: the head ends in a bottleneck scored by cosine against K prototypes, the student's own
    (``student_prototypes: own``) or the target's columns, frozen (``teacher_frozen``)."""

    def head(self, dim: int, width: int, columns: torch.Tensor | None) -> nn.Module:
        m = self.m
        return mlp([dim, m.head_hidden, m.bottleneck if m.student_prototypes == "own" else columns.shape[0]], bn="hidden", act="gelu")

    def add_parameters(self, module: nn.Module, width: int) -> None:
        if self.m.student_prototypes == "own":
            module.prototypes = nn.Parameter(F.normalize(torch.randn(width, self.m.bottleneck), dim=1))

    def outputs(self, module: nn.Module, out: torch.Tensor) -> torch.Tensor:
        if self.m.student_prototypes == "teacher_frozen":
            return F.normalize(out, dim=1) @ module.prepared["columns"]
        return F.normalize(out, dim=1) @ F.normalize(module.prototypes, dim=1).T
