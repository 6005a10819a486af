"""RoB on MSN (``base: msn``, 6.5): the anchors are the global crops and the focal (local) crops; prototypes
(``student_prototypes``: the student's own, or the teacher's frozen target columns), sharpened Sinkhorn targets from the
teacher on the global crops, cross-entropy plus ME-MAX (``memax``); ViT students drop ``patch_drop`` of the global
crops' patch tokens, as MSN masks its anchor view.

Several processes: the Sinkhorn-Knopp masses of the targets (Q's total and its per-prototype sums all-reduced, B = local
batch × world size, MSN's ``distributed_sinkhorn``) and ME-MAX's mean prediction (all-reduced, the gradient passed
through as MSN's ``AllReduce``, DDP averaging it) are those of the global batch."""

from __future__ import annotations

import torch

from ssdistill.losses.selfsup import memax, msn_cross_entropy, sharpen, sinkhorn
from ssdistill.methods.rob.base import PrototypeBase


class MSN(PrototypeBase):
    @property
    def patch_drop(self) -> float:
        return self.m.patch_drop

    def loss(self, module, outputs: list[torch.Tensor], targets: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        m = self.m
        probabilities = torch.softmax(torch.cat(outputs).float() / m.msn_temperature, dim=1)
        with torch.no_grad():  # sharpened teacher targets of the two global crops, equipartitioned over the global batch
            sharp = [sinkhorn(sharpen(torch.softmax(t / m.msn_temperature, dim=1), m.sharpen_temperature), all_ranks=True) for t in targets]
        # anchor view v (global crops first, then the focal ones) predicts the target of global crop v mod 2
        cross = msn_cross_entropy(probabilities, torch.cat([sharp[v % 2] for v in range(len(outputs))]))
        regulariser = memax(probabilities, all_ranks=True)  # the mean prediction over every rank's anchors
        return cross + m.memax_weight * regulariser, {"cross_entropy": cross, "memax": regulariser}
