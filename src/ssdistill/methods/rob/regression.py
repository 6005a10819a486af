"""RoB on regression (``base: regression``, 6.4, BYOL / SimSiam heads): two global crops, mean (2 − 2 cos) of the
student's prediction of one crop to the teacher's target of the other (``same_view_pairs`` adds the crop itself)."""

from __future__ import annotations

import torch
from torch import nn

from ssdistill.losses.selfsup import regression_loss
from ssdistill.methods.rob.base import RoBBase
from ssdistill.models.heads import mlp


class Regression(RoBBase):
    local_crops = False

    def head(self, dim: int, width: int, columns: torch.Tensor | None) -> nn.Module:
        """A projector and a predictor: BYOL's (MLPs with BN) or SimSiam's (a bottleneck predictor)."""
        m = self.m
        if m.head == "byol":
            return nn.Sequential(mlp([dim, m.head_hidden, width], bn="hidden"), mlp([width, m.head_hidden, width], bn="hidden"))
        return nn.Sequential(mlp([dim, m.head_hidden, width], bn="all"), mlp([width, m.head_hidden // 4, width], bn="hidden"))

    def loss(self, module, outputs: list[torch.Tensor], targets: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        pairs = [(0, 1), (1, 0)] + ([(0, 0), (1, 1)] if self.m.same_view_pairs else [])
        return sum(regression_loss(outputs[a], targets[b]) for a, b in pairs) / len(pairs) * 2, {}
