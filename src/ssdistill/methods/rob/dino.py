"""RoB on DINO (``base: dino``, 6.3): multi-crop views (2 global crops, ``local_crops`` local ones), the student on every
crop, the teacher on the global crops; DINO cross-entropy over (global, other) pairs (``same_view_pairs`` adds the crop
itself), a fixed teacher temperature, a centre that is ``constant`` (the mean teacher target over one pass of global
crops, computed before training), ``ema`` or ``none``.

Several processes: the ``ema`` centre's batch mean is that of the global batch (the targets' sum all-reduced /
(B · world size), DINO's ``update_center``; every rank then holds the same centre, so DDP's broadcast of rank 0's
buffers changes nothing). The ``constant`` centre is no batch statistic: one pass over every training image with each
image's crop seeded from (seed, image) (``TeacherProvider.mean_output``), so every process computes the same centre
whatever ``data.num_workers``; over a bank, the mean of the bank's targets."""

from __future__ import annotations

import torch

from ssdistill.distributed import global_mean_nograd
from ssdistill.losses.selfsup import dino_cross_entropy
from ssdistill.methods.rob.base import PrototypeBase
from ssdistill.methods.rob.config import RoBConfig
from ssdistill.methods.rob.targets import project, target_tap


def dino_temperatures(m: RoBConfig) -> tuple[float, float]:
    """(τ_s, τ_t): 1 and 1 with target=logits (plain soft distillation), else 0.1 and 0.04 unless set."""
    default = (1.0, 1.0) if m.target == "logits" else (0.1, 0.04)
    return (m.student_temperature or default[0], m.teacher_temperature or default[1])


class Dino(PrototypeBase):
    def add_parameters(self, module, width: int) -> None:
        super().add_parameters(module, width)
        module.register_buffer("dino_center", module.prepared.get("center", torch.zeros(width)).clone())

    def outputs(self, module, out: torch.Tensor) -> torch.Tensor:
        if self.m.target == "logits":  # (teacher_frozen prototypes need the target's columns: refused with logits)
            # plain soft distillation (τ_s = 1): the student's logits are a plain linear layer, unbounded; cosines in
            # [-1, 1] at τ_s = 1 cannot make a softmax over C classes peaked (max probability e / (e + (C-1)/e))
            return out @ module.prototypes.T
        return super().outputs(module, out)

    def loss(self, module, outputs: list[torch.Tensor], targets: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        m = self.m
        s_temp, t_temp = dino_temperatures(m)
        center = None if m.effective("center") == "none" else module.dino_center
        loss = dino_cross_entropy(outputs, targets, [0, 1], center, s_temp, t_temp, m.same_view_pairs)
        if m.effective("center") == "ema":
            with torch.no_grad():
                # the batch mean over every rank's targets (DINO's all-reduced centre; the local mean in one process)
                batch_center = global_mean_nograd(torch.cat(targets))
                module.dino_center.mul_(m.center_momentum).add_(batch_center, alpha=1 - m.center_momentum)
        return loss, {}

    def prepare(self, ctx, tensors: dict[str, torch.Tensor], global_view, bank_table: torch.Tensor | None) -> None:
        """center=constant: the mean teacher target over one pass of global crops (of the bank's, with a bank)."""
        m = self.m
        if m.effective("center") != "constant":
            return
        if bank_table is not None:
            tensors["center"] = project(bank_table.float(), tensors, m).mean(0)
        else:
            tensors["center"] = ctx.mean_output(global_view, lambda out: project(out, tensors, m), tap=target_tap(m))
