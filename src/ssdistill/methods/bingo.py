"""BINGO (docs/methods/bingo.md): bags of the teacher's K nearest neighbours, contrastive against teacher keys and a queue.

Bags come once from the teacher cache (exact top-K cosine neighbours of the original-view embeddings, self
excluded). Each item returns student views of its anchor (q_a) and of a random bag member (q_p); the teacher's keys
t_a, t_p of further augmented views are computed online (default) or read from a cached augmentation bank
(``teacher_keys: bank``, an approximation). With NCE(u, v) = CE([<u, v>, u Qᵀ] / τ, 0):

official form (default): (w_o, w_c) = (1, 0) while epoch <= ``warm_epochs`` (epochs count from 0, so the default
  10 gives 11 intra-only epochs, as the official ``epoch > 10`` test), then (0.5, 0.5);
  L = [w_o NCE(s_a, t_a) + w_c NCE(s_a, t_p) + w_o NCE(s_p, t_p) + w_c NCE(s_p, t_a) + λ NCE(s_m, t_a) + (1 - λ) NCE(s_m, t_p)] / 3
  with s_m the student's embedding of the batch CutMix of q_a and q_p (λ = share of anchor pixels);
paper form: L = NCE(s_a, t_a) + NCE(s_p, t_a).
Only t_a enters the queue; older queue keys of the anchor and of the drawn neighbour stay negatives unless
``mask_same_id`` (as in the official code).
"""

from __future__ import annotations

import importlib.util
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch.nn import functional as F

from ssdistill.config import SELECTS, DistillConfig, official
from ssdistill.data.mixing import batch_cutmix
from ssdistill.data.pairs import NeighbourPairViews
from ssdistill.data.views import augmented_view
from ssdistill.engine.contract import BatchLayout, Preparation, TeacherNeed
from ssdistill.engine.module import DistillMethod
from ssdistill.errors import ConfigError
from ssdistill.losses.infonce import queue_nce
from ssdistill.methods.queued import QueueConfig, excluded_keys, key_queue
from ssdistill.methods.teacher_bn import TeacherBNConfig, teacher_signal_for
from ssdistill.models.heads import mlp


class BINGOConfig(QueueConfig, TeacherBNConfig):
    name: Literal["bingo"] = "bingo"
    bag_size: int = Field(5, gt=0, description="K teacher nearest neighbours per image", json_schema_extra=official(5))
    head_hidden: list[int] = Field(
        default_factory=lambda: [2048], description="hidden widths of the student head", json_schema_extra=official([2048])
    )
    temperature: float = Field(0.2, gt=0, description="InfoNCE temperature τ", json_schema_extra=official(0.2))
    loss_form: Literal["official", "paper"] = Field(
        "official",
        description="official code (intra/inter, warm-up, CutMix, /3) or the paper's L_intra + L_inter",
        json_schema_extra=official("official"),
    )
    warm_epochs: int = Field(
        10, ge=0, description="official form: intra terms only while epoch <= warm_epochs (epochs from 0)", json_schema_extra=official(10)
    )
    teacher_keys: Literal["online", "bank"] = Field(
        "online", description="teacher keys of augmented views: online, or a cached augmentation bank", json_schema_extra=official("online")
    )
    bank_repeats: int = Field(8, gt=0, description="augmented views per image in the teacher bank (teacher_keys=bank)")
    neighbour_backend: Literal["torch", "faiss"] = Field(
        "torch", description="exact search of the bags: torch, or faiss (pip install faiss-cpu; same bags up to ties)", json_schema_extra=SELECTS
    )
    ONLINE: ClassVar[tuple[str, str]] = ("teacher_keys", "online")

    def inactive(self) -> set[str]:
        unused = super().inactive()
        if self.loss_form == "paper":
            unused.add("warm_epochs")
        if self.teacher_keys != "bank":
            unused.add("bank_repeats")
        return unused


class BINGO(DistillMethod):
    name = "bingo"
    config_class = BINGOConfig
    description = "BINGO: bags of teacher nearest neighbours, InfoNCE against teacher keys and a queue"

    def __init__(self, cfg, students, signals, **context) -> None:
        super().__init__(cfg, students, signals, **context)
        m, keys = cfg.method, self.signals["teacher"]
        self.head = mlp([self.student.dim, *m.head_hidden, keys.dim], bn="none")
        self.queue = key_queue(m, keys.dim, self.dataset_size, cfg.trainer.seed)
        self.signal = teacher_signal_for(m, keys)

    @classmethod
    def teacher_needs(cls, cfg: DistillConfig) -> dict:
        m = cfg.method
        return {"teacher": TeacherNeed("bank", repeats=m.bank_repeats) if m.teacher_keys == "bank" else TeacherNeed("augmented")}

    @classmethod
    def train_views(cls, cfg: DistillConfig, ctx) -> dict:
        views = {"q": augmented_view(cfg.student.resolution, cfg.aug)}
        if cfg.method.teacher_keys == "online":
            pre = ctx.teacher().preprocess
            views["k"] = augmented_view(pre.resolution, cfg.aug, pre.interpolation)
        return views

    @classmethod
    def prepare(cls, cfg: DistillConfig, ctx) -> Preparation:
        if cfg.method.neighbour_backend == "faiss" and importlib.util.find_spec("faiss") is None:
            raise ConfigError("method.neighbour_backend=faiss needs faiss: pip install faiss-cpu (or 'ssdistill[faiss]'), or use torch")
        if not cfg.cache.enabled:
            raise ConfigError("BINGO's neighbour bags are computed from the teacher cache: set cache.enabled=true")
        if cfg.method.bag_size >= len(ctx.source):
            raise ConfigError(f"method.bag_size={cfg.method.bag_size} needs more than {len(ctx.source)} training images")
        bags = ctx.neighbours(cfg.method.bag_size, what="BINGO's neighbour bags", backend=cfg.method.neighbour_backend)
        repeats = cfg.method.bank_repeats if cfg.method.teacher_keys == "bank" else None
        return Preparation(dataset=NeighbourPairViews(ctx.source, bags, cls.train_views(cfg, ctx), repeats))

    @classmethod
    def batch_layout(cls, cfg: DistillConfig, ctx) -> BatchLayout:
        views = {f"{name}{side}": view.resolution for name, view in cls.train_views(cfg, ctx).items() for side in "ap"}
        if cfg.method.teacher_keys != "bank":
            return BatchLayout(views, ("neighbour",))
        rows = len(ctx.source) * cfg.method.bank_repeats
        return BatchLayout(views, ("neighbour", "bank_row", "bank_row_neighbour"), {"bank_row": rows, "bank_row_neighbour": rows})

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.student(images)), dim=1)

    def _teacher_keys(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        views = batch["views"]
        if "bank_row" in batch:
            anchor, neighbour = self.signal(batch["bank_row"]), self.signal(batch["bank_row_neighbour"])
        else:
            anchor, neighbour = self.signal(batch["index"], views["ka"]), self.signal(batch["neighbour"], views["kp"])
        return F.normalize(anchor.detach().float(), dim=1), F.normalize(neighbour.detach().float(), dim=1)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        m = self.cfg.method
        qa, qp = batch["views"]["qa"], batch["views"]["qp"]
        ta, tp = self._teacher_keys(batch)
        queue = self.queue.keys
        bag_pair = excluded_keys(m, self.queue, batch["index"], batch["neighbour"])
        nce = lambda u, v: queue_nce(u, v, queue, m.temperature, exclude=bag_pair)  # noqa: E731
        sa, sp = self._embed(qa), self._embed(qp)
        if m.loss_form == "paper":
            intra, inter = nce(sa, ta), nce(sp, ta)
            loss, terms = intra + inter, {"intra": intra, "inter": inter}
        else:
            own, cross = (1.0, 0.0) if self.current_epoch <= m.warm_epochs else (0.5, 0.5)
            mixed, lam = batch_cutmix(qa, qp)
            sm = self._embed(mixed)
            intra = nce(sa, ta) + nce(sp, tp)
            inter = nce(sa, tp) + nce(sp, ta)
            cutmix = lam * nce(sm, ta) + (1 - lam) * nce(sm, tp)
            loss = (own * intra + cross * inter + cutmix) / 3
            terms = {"intra": intra, "inter": inter, "cutmix": cutmix}
        self.queue.stage(ta, batch["index"])
        return self.log_loss(loss, **{k: v.detach() for k, v in terms.items()})
