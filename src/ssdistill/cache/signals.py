"""The teacher-signal interface: ``signal(index, images) -> [B, D]`` fp32, no gradient.

A signal also says where it reads a batch: ``index_key`` (``index``, or ``bank_row`` for an augmentation bank) and
``batch_view`` (the name of the view the dataset renders for an online signal of the original view, else None), so
that ``signal.for_batch(batch)`` works whichever way the engine fulfilled the need."""

from __future__ import annotations

import torch

from ssdistill.models.teachers import FrozenTeacher


class TeacherSignal:
    """Per-sample teacher output. ``index`` are dataset positions; ``images`` the view the teacher would see."""

    dim: int
    fingerprint: str  # the teacher's (weights, preprocessing, tap): recorded with each signal in results.json
    online: bool = False
    index_key: str = "index"
    batch_view: str | None = None

    def __call__(self, index: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def for_batch(self, batch: dict) -> torch.Tensor:
        """The signal for a training batch: rows by ``index_key``, images from ``batch_view`` when it has one."""
        images = batch["views"][self.batch_view] if self.batch_view else None
        return self(batch[self.index_key], images)

    def to(self, device: torch.device | str) -> TeacherSignal:
        return self


class OnlineSignal(TeacherSignal):
    """Runs the frozen teacher on the images of the batch (needed when the teacher sees augmented views)."""

    online = True

    def __init__(self, teacher: FrozenTeacher, bn_groups: int | None = None, batch_view: str | None = None) -> None:
        self.teacher, self.dim, self.fingerprint = teacher, teacher.dim, teacher.fingerprint
        self.bn_groups = bn_groups  # None: running BatchNorm statistics (eval mode); n: statistics of n random sub-batches
        self.batch_view = batch_view

    def with_batch_statistics(self, groups: int) -> OnlineSignal:
        return OnlineSignal(self.teacher, bn_groups=groups, batch_view=self.batch_view)

    def __call__(self, index: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        if images is None:
            raise ValueError("an online teacher signal needs the images of the batch")
        return self.teacher(images, bn_groups=self.bn_groups)

    def to(self, device: torch.device | str) -> OnlineSignal:
        self.teacher.to(device)
        return self


class TableSignal(TeacherSignal):
    """Rows of a table computed once (row i = teacher output for sample i of a deterministic view)."""

    def __init__(self, table: torch.Tensor, fingerprint: str, index_key: str = "index") -> None:
        if table.ndim != 2:
            raise ValueError(f"a signal table must be [N, D], got shape {tuple(table.shape)}")
        self.table, self.dim, self.fingerprint, self.index_key = table, int(table.shape[1]), fingerprint, index_key

    def __call__(self, index: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        return self.table[index.to(self.table.device)].to(index.device).float()

    def to(self, device: torch.device | str) -> TableSignal:
        self.table = self.table.to(device)
        return self
