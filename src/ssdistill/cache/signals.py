"""The teacher-signal interface: ``signal(index, images) -> [B, D]`` fp32, no gradient."""

from __future__ import annotations

import torch

from ssdistill.models.teachers import FrozenTeacher


class TeacherSignal:
    """Per-sample teacher output. ``index`` are dataset positions; ``images`` the view the teacher would see."""

    dim: int
    fingerprint: str

    def __call__(self, index: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def to(self, device: torch.device | str) -> "TeacherSignal":
        return self


class OnlineSignal(TeacherSignal):
    """Runs the frozen teacher on the images of the batch (needed when the teacher sees augmented views)."""

    def __init__(self, teacher: FrozenTeacher, bn_groups: int | None = None) -> None:
        self.teacher, self.dim, self.fingerprint = teacher, teacher.dim, teacher.fingerprint
        self.bn_groups = bn_groups  # None: running BatchNorm statistics (eval mode); n: statistics of n random sub-batches

    def with_batch_statistics(self, groups: int) -> "OnlineSignal":
        return OnlineSignal(self.teacher, bn_groups=groups)

    def __call__(self, index: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        if images is None:
            raise ValueError("an online teacher signal needs the images of the batch")
        return self.teacher(images, bn_groups=self.bn_groups)

    def to(self, device: torch.device | str) -> "OnlineSignal":
        self.teacher.to(device)
        return self


class TableSignal(TeacherSignal):
    """Rows of a table computed once (row i = teacher output for sample i of a deterministic view)."""

    def __init__(self, table: torch.Tensor, fingerprint: str) -> None:
        if table.ndim != 2:
            raise ValueError(f"a signal table must be [N, D], got shape {tuple(table.shape)}")
        self.table, self.dim, self.fingerprint = table, int(table.shape[1]), fingerprint

    def __call__(self, index: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        return self.table[index.to(self.table.device)].to(index.device).float()

    def to(self, device: torch.device | str) -> "TableSignal":
        self.table = self.table.to(device)
        return self
