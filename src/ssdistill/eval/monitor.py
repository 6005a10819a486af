"""Online monitoring: each student's weighted k-NN every N epochs during distillation, logged as
``monitor/knn_top1`` (and ``monitor/knn_top5``) next to the losses in metrics.csv; the members of a cohort as
``monitor/<member>/knn_top1``."""

from __future__ import annotations

from typing import Callable

import lightning as L
import torch

from ssdistill.data.datasets import ImageSource
from ssdistill.eval.features import extract_features
from ssdistill.eval.knn import knn_accuracy


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
            extract = lambda source, what: extract_features(  # noqa: E731
                student, source, view, self.batch_size, self.num_workers, pl_module.device, f"monitor {what}"
            )
            scores = knn_accuracy(
                extract(self.memory, "train"), torch.tensor(self.memory.labels), extract(self.query, "val"), torch.tensor(self.query.labels),
                self.k, self.temperature, device=pl_module.device,
            )
            prefix = "monitor/" if member == "student" else f"monitor/{member}/"
            for name, value in scores.items():
                pl_module.log(f"{prefix}knn_{name}", value, on_step=False, on_epoch=True, rank_zero_only=True)
