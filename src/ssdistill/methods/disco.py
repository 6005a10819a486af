"""DisCo (docs/methods/baselines.md): the student is a full MoCo-v2 learner (methods/moco.py) whose final embeddings of both
views are also pulled to the teacher's: L = InfoNCE + w‖n(q₁) - n(t₁)‖² + w‖n(q₂) - n(t₂)‖², averaged over the
batch; w = 32 reproduces the official code's sum over a 32-image GPU batch.

The embedding is as wide as the teacher's output (DisCo compares them directly; the official teachers have a
128-d MoCo head). ``teacher_view: same`` runs the teacher online on the two student views (as the paper);
``original`` uses the cached teacher embedding of the non-augmented image for both terms (cheap; recorded as
a deviation). The official code runs the teacher with training-mode BatchNorm (``teacher_bn: train``).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch.nn import functional as F

from ssdistill.config import DistillConfig, official
from ssdistill.data.views import augmented_view
from ssdistill.engine.contract import TeacherNeed
from ssdistill.errors import ConfigError
from ssdistill.methods.moco import MoCoConfig, MoCoV2
from ssdistill.methods.teacher_bn import TeacherBNConfig, teacher_signal_for


class DisCoConfig(MoCoConfig, TeacherBNConfig):
    name: Literal["disco"] = "disco"
    head_hidden: list[int] | None = Field(
        default_factory=lambda: [2048],
        description="hidden widths of the head (DisCo widens it to 2048 against the bottleneck)",
        json_schema_extra=official([2048]),
    )
    out_dim: int | None = Field(
        None, description="embedding width; must be the teacher's width (default), which DisCo compares it with", json_schema_extra=official(None)
    )
    distill_weight: float = Field(
        32.0,
        ge=0,
        description="weight w of each view's squared distance to the teacher (32: the official sum over 32 images)",
        json_schema_extra=official(32.0),
    )
    teacher_view: Literal["same", "original"] = Field(
        "same",
        description="same: teacher online on both student views (paper); original: cached embedding of the original view",
        json_schema_extra=official("same"),
    )

    ONLINE: ClassVar[tuple[str, str]] = ("teacher_view", "same")

    def inactive(self) -> set[str]:
        return super().inactive() | {"out_dim"}  # it may only restate the teacher's width (checked at build time)


class DisCo(MoCoV2):
    name = "disco"
    config_class = DisCoConfig
    description = "DisCo: MoCo-v2 student + squared distance of its final embeddings to the teacher's"

    def embedding_dim(self) -> int:
        wanted, width = self.cfg.method.out_dim, self.signals["teacher"].dim
        if wanted is not None and wanted != width:
            raise ConfigError(f"method.out_dim={wanted} differs from the teacher's {width}-d output; DisCo compares the two, leave out_dim unset")
        return width

    @classmethod
    def teacher_needs(cls, cfg: DistillConfig) -> dict:
        return {"teacher": TeacherNeed("augmented" if cfg.method.teacher_view == "same" else "original")}

    @classmethod
    def train_views(cls, cfg: DistillConfig, ctx) -> dict:
        if cfg.method.teacher_view == "original":
            return super().train_views(cfg, ctx)
        pre = ctx.teacher().preprocess  # both views rendered at the teacher's resolution, downsampled for the student
        view = augmented_view(pre.resolution, cfg.aug, pre.interpolation)
        return {"query": view, "key": view}

    def __init__(self, cfg, students, signals, **context) -> None:
        super().__init__(cfg, students, signals, **context)
        self.signal = teacher_signal_for(cfg.method, self.signals["teacher"])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        views, index = batch["views"], batch["index"]
        online = self.cfg.method.teacher_view == "same"
        teacher_images = {name: views[name] for name in ("query", "key")}
        if online:
            size = (self.cfg.student.resolution,) * 2
            batch = {**batch, "views": {n: F.interpolate(v, size=size, mode="bilinear", antialias=True) for n, v in views.items()}}
        contrastive, q1, k = self.contrastive_step(batch)
        q2 = self.query(batch["views"]["key"])
        distances = []
        for name, q in (("query", q1), ("key", q2)):
            target = (self.signal(index, teacher_images[name]) if online else self.signal.for_batch(batch)).detach()
            distances.append((q - F.normalize(target.float(), dim=1)).pow(2).sum(1).mean())
        distill = self.cfg.method.distill_weight * (distances[0] + distances[1])
        self.queue.stage(k, index)
        return self.log_loss(contrastive + distill, contrastive=contrastive.detach(), distill=distill.detach())
