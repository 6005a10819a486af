"""MoCo-v2 on the student alone: the no-teacher baseline of BINGO's tables (docs/methods/baselines.md).

A query encoder (student + MLP head) and its momentum copy (the key encoder) see two augmented views of each
image; the query must pick its own key out of a queue of earlier keys: CE([<q, k>, q Qᵀ] / τ, 0) (older keys of its
own image stay negatives unless ``mask_same_id``, as in the official code). The key batch
goes through BatchNorm in ``bn_groups`` random sub-batches (a single-process stand-in for shuffle-BN, so batch
statistics cannot leak which key belongs to which query). DisCo (methods/disco.py) extends this class.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from ssdistill.config import DistillConfig, official
from ssdistill.data.views import augmented_view
from ssdistill.engine.module import DistillMethod
from ssdistill.losses.infonce import queue_nce
from ssdistill.methods.queued import QueueConfig, excluded_keys, key_queue
from ssdistill.models.batchnorm import grouped_forward
from ssdistill.models.heads import mlp
from ssdistill.models.momentum import momentum_copy, momentum_update


class MoCoConfig(QueueConfig):
    name: Literal["moco"] = "moco"
    head_hidden: list[int] | None = Field(
        None, description="hidden widths of the head (default: one layer as wide as the backbone)", json_schema_extra=official(None)
    )
    out_dim: int = Field(128, gt=0, description="embedding width (queue width)", json_schema_extra=official(128))
    temperature: float = Field(0.2, gt=0, description="InfoNCE temperature τ", json_schema_extra=official(0.2))
    momentum: float = Field(0.999, ge=0, le=1, description="key-encoder EMA momentum", json_schema_extra=official(0.999))
    bn_groups: int = Field(
        4,
        ge=1,
        description="key batch split into this many sub-batches for BatchNorm (single-process stand-in for "
        "shuffle-BN; the official per-GPU batches of 32 correspond to batch / 32)",
    )


class Query(nn.Module):
    def __init__(self, student: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.student, self.head = student, head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.student(images)), dim=1)


class MoCoV2(DistillMethod):
    name = "moco"
    config_class = MoCoConfig
    description = "MoCo-v2 on the student, no teacher (baseline): momentum key encoder + queue + InfoNCE"

    def __init__(self, cfg, students, signals, **context) -> None:
        super().__init__(cfg, students, signals, **context)
        m, student = cfg.method, self.student
        hidden = m.head_hidden if m.head_hidden is not None else [student.dim]
        self.head = mlp([student.dim, *hidden, self.embedding_dim()], bn="none")
        self.query = Query(self.student, self.head)
        self.key_encoder = momentum_copy(self.query)
        self.queue = key_queue(m, self.embedding_dim(), self.dataset_size, cfg.trainer.seed)

    def embedding_dim(self) -> int:
        return self.cfg.method.out_dim

    @classmethod
    def teacher_needs(cls, cfg: DistillConfig) -> dict:
        return {}

    @classmethod
    def train_views(cls, cfg: DistillConfig, ctx) -> dict:
        view = augmented_view(cfg.student.resolution, cfg.aug)
        return {"query": view, "key": view}

    @torch.no_grad()
    def keys(self, images: torch.Tensor) -> torch.Tensor:
        """Key-encoder embeddings, BatchNorm statistics taken over ``bn_groups`` random sub-batches."""
        return grouped_forward(self.key_encoder, images, self.cfg.method.bn_groups)

    def contrastive_step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(queue InfoNCE loss, query embeddings, keys); the caller stages the keys for the queue."""
        views = batch["views"]
        if self.opens_optimiser_step:  # once per optimiser step, with gradient accumulation too
            momentum_update(self.key_encoder, self.query, self.cfg.method.momentum)
        q = self.query(views["query"])
        k = self.keys(views["key"])
        own = excluded_keys(self.cfg.method, self.queue, batch["index"])
        loss = queue_nce(q, k, self.queue.keys, self.cfg.method.temperature, exclude=own)
        return loss, q, k

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, q, k = self.contrastive_step(batch)
        self.queue.stage(k, batch["index"])
        return self.log_loss(loss, **self.key_agreement(q, k))

    @torch.no_grad()
    def key_agreement(self, q: torch.Tensor, k: torch.Tensor) -> dict[str, torch.Tensor]:
        """Monitoring: mean cosine of each query with its own key, and with the queue's keys
        (mean_ij <q_i, Q_j> = <mean q, mean Q>: no second B x queue product in the step)."""
        return {"positive_cos": (q * k).sum(1).mean(), "queue_cos": q.mean(0) @ self.queue.keys.mean(0)}
