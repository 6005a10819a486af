"""Online monitoring during distillation, logged next to the losses (metrics.csv, trackers):

- each student's weighted k-NN every N epochs (labels needed): ``monitor/knn_top1`` (and ``knn_top5``), a cohort's
  members as ``monitor/<member>/knn_top1``;
- label-free, every epoch: each student's linear CKA with the primary teacher on a fixed held-back batch of images
  (``monitor/teacher_cka``, also on the progress bar), so a user without labels sees learning happen; the same figure
  of the untrained students, measured before the first step of a fresh run, is logged once with epoch 0 as
  ``monitor/teacher_cka_start`` (the baseline the curve should leave behind)."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch

from ssdistill.data.datasets import ImageSource
from ssdistill.eval.classes import align_classes
from ssdistill.eval.features import extract_features
from ssdistill.eval.knn import knn_accuracy
from ssdistill.labels import is_primary, monitor_prefix
from ssdistill.losses.dependence import linear_cka


class KNNMonitor(L.Callback):
    def __init__(
        self,
        memory: ImageSource,
        query: ImageSource,
        views: dict[str, Callable],
        every_n_epochs: int,
        k: int = 20,
        temperature: float = 0.07,
        batch_size: int = 256,
        num_workers: int = 2,
    ) -> None:
        if memory.labels is None or query.labels is None:
            raise ValueError("k-NN monitoring needs labelled memory and evaluation splits")
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be at least 1, got {every_n_epochs}")
        # the evaluation split in the memory's class ids, by name (eval/classes.py); the run's own check refused a class
        # the whole memory lacks, so a class left out here is one the monitor's seeded memory subset happens to miss
        query = align_classes(memory, query, shared=True, memory_name="the monitor's k-NN memory", check_images=False).query
        self.memory, self.query, self.views = memory, query, views  # member -> the view its student sees
        self.every, self.k, self.temperature = every_n_epochs, k, temperature
        self.batch_size, self.num_workers = batch_size, num_workers

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % self.every and epoch != trainer.max_epochs:
            return
        if not trainer.is_global_zero:
            return
        for member, student in pl_module.students().items():
            view = self.views[member]
            extract = lambda source, what, student=student, view=view: extract_features(
                student, source, view, self.batch_size, self.num_workers, pl_module.device, f"monitor {what}"
            )
            scores = knn_accuracy(
                extract(self.memory, "train"),
                torch.tensor(self.memory.labels),
                extract(self.query, "val"),
                torch.tensor(self.query.labels),
                self.k,
                self.temperature,
                device=pl_module.device,
            )
            prefix = monitor_prefix(member)
            for name, value in scores.items():
                # computed on rank zero only and declared so (rank_zero_only); with it sync_dist=True runs no collective
                # (there is nothing to reduce) and stops Lightning suggesting one under DDP
                pl_module.log(
                    f"{prefix}knn_{name}",
                    value,
                    on_step=False,
                    on_epoch=True,
                    rank_zero_only=True,
                    sync_dist=True,
                    prog_bar=is_primary(member) and name == "top1",
                )  # "knn" on the bar (engine/progress.py)


class AlignmentMonitor(L.Callback):
    """Linear CKA of every student's features with the teacher's on the same fixed images, after every epoch (rank
    zero). The teacher's features are computed once when training starts (``teacher_features``: a callable giving
    them, so that nothing is built unless training runs)."""

    def __init__(self, images: ImageSource, views: dict[str, Callable], teacher_features: Callable[[], torch.Tensor], batch_size: int = 256) -> None:
        if len(images) < 4:
            raise ValueError(f"the alignment monitor needs at least 4 images, got {len(images)}")
        self.images, self.views, self.teacher_features = images, views, teacher_features
        self.batch_size = batch_size
        self.target: torch.Tensor | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.target is None:
            self.target = self.teacher_features().float()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step == 0:  # a fresh run (not a resumed one): the students as initialised
            self._log(trainer, pl_module, "_start", progress_bar=False)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, "", progress_bar=True)

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, suffix: str, progress_bar: bool) -> None:
        if not trainer.is_global_zero:
            return
        for member, student in pl_module.students().items():
            features = extract_features(student, self.images, self.views[member], self.batch_size, 0, pl_module.device, "monitor alignment")
            name = f"{monitor_prefix(member)}teacher_cka{suffix}"
            pl_module.log(
                name,
                float(linear_cka(features, self.target)),
                on_step=False,
                on_epoch=True,  # rank zero's: as KNNMonitor
                prog_bar=progress_bar and is_primary(member),
                rank_zero_only=True,
                sync_dist=True,
            )
