"""RoB, "replace one branch" (docs/methods/rob.md; no official code is public, the decisions box says what we chose): a
joint-embedding self-supervised method keeps its views and its loss, but its target branch is the frozen teacher.

* ``base: dino`` (6.3): multi-crop views (2 global crops, ``local_crops`` local ones), the student on every crop (batched
  per resolution), the teacher on the global crops; DINO cross-entropy over (global, other) pairs (``same_view_pairs``
  adds the crop itself), a fixed teacher temperature, a centre that is ``constant`` (the mean teacher target over one
  pass of global crops, computed before training), ``ema`` or ``none``.
* ``base: regression`` (6.4, BYOL / SimSiam heads): two global crops, mean (2 − 2 cos) of the student's prediction of
  one crop to the teacher's target of the other.
* ``base: msn`` (6.5): the anchors are the global crops and the focal (local) crops; prototypes (``student_prototypes``:
  the student's own, or the teacher's frozen target columns), sharpened Sinkhorn targets from the teacher on the
  global crops, cross-entropy plus ME-MAX (``memax``).

The target is the teacher checkpoint's own self-supervised head when it has one (``head``: its DINO / MSN head read from
``teacher_head``, models/ssl_head.py); the teachers we ship are supervised classifiers without one, so the target is then
``logits`` (the teacher's classifier logits) or ``projection``: the normalised teacher embedding times K fixed unit columns
(``projection_init``: seeded ``random``, ``kmeans`` centroids of the cached teacher features, or ``identity``, the
normalised embedding itself, for the regression base). The teacher runs online on the global crops, which the dataset
renders at the teacher's resolution (the student's copy is downsampled), so both see the same crop; or
(``teacher_crops: bank``) its outputs are read from a cached bank of ``bank_repeats`` global crops per image drawn with
the global crop scale, and each step's two global crops are two distinct crops of the bank, replayed for the student at
its resolution (the same boxes, flips and colours; recorded as the approximation ``teacher_bank(R)``, 6.3).

Several processes (DDP, docs/distributed.md): the batch statistics are those of the global batch, as in the official DINO and
MSN code, so 2 processes × B images give the numbers of 1 process × 2B on the same images. Reduced over every rank:
the ``ema`` centre's batch mean (the targets' sum all-reduced / (B · world size), DINO's ``update_center``; every rank
then holds the same centre, so DDP's broadcast of rank 0's buffers changes nothing); the Sinkhorn-Knopp masses of MSN's
targets (Q's total and its per-prototype sums all-reduced, B = local batch × world size, MSN's ``distributed_sinkhorn``);
ME-MAX's mean prediction (all-reduced, the gradient passed through as MSN's ``AllReduce``, DDP averaging it). Not batch
statistics, so not reduced: the ``constant`` centre (one pass over every training image with each image's crop seeded
from (seed, image), as the training loader seeds its items, so every process computes the same centre whatever
``data.num_workers``), the k-means and random columns (seeded, from the shared cache) and the bank centre. Still
per process: the BatchNorm statistics of the student and its head (as every method here; DINO's own code converts them
to SyncBatchNorm). In one process every reduction is the identity and the numbers are those of the local batch.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn import functional as F

from ssdistill.cache.bank import BankCrops
from ssdistill.config import DistillConfig, MethodConfig
from ssdistill.data.views import augmented_view
from ssdistill.distributed import global_mean_nograd
from ssdistill.engine.contract import BatchLayout, Preparation, TeacherNeed
from ssdistill.engine.module import DistillMethod
from ssdistill.errors import ConfigError
from ssdistill.losses.selfsup import (
    dino_cross_entropy,
    memax,
    msn_cross_entropy,
    regression_loss,
    sharpen,
    sinkhorn,
)
from ssdistill.models.heads import mlp
from ssdistill.models.ssl_head import read_ssl_head, ssl_head
from ssdistill.models.students import patch_dropout

GLOBAL = ("global0", "global1")


def head_params(tensors: dict) -> dict[str, torch.Tensor]:
    """The teacher head's tensors among a preparation's (stored as ``head.<name>``)."""
    return {key[len("head."):]: value for key, value in tensors.items() if key.startswith("head.")}


class RoBConfig(MethodConfig):
    name: Literal["rob"] = "rob"
    base: Literal["dino", "regression", "msn"] = Field("dino", description="the joint-embedding method whose target branch the teacher replaces")
    target: Literal["logits", "projection", "head"] = Field(
        "projection", description="logits: the teacher's classifier logits; projection: n(teacher embedding) times K fixed unit columns; "
        "head: the teacher checkpoint's own SSL head (teacher_head)"
    )
    teacher_head: str | None = Field(None, description="target=head: checkpoint holding the teacher's DINO / MSN / BYOL head")
    teacher_head_prefix: str = Field(
        "teacher.head.", description="target=head: key prefix of the head's MLP and last layer (DINO full checkpoints: teacher.head.; "
        "MSN: target_encoder.module.fc.)"
    )
    teacher_prototypes: str | None = Field(None, description="target=head: key of the head's prototypes (MSN: prototypes) instead of a last layer")
    projection_init: Literal["random", "kmeans", "identity"] = Field(
        "kmeans", description="the K columns of the projection target: seeded random, k-means centroids of the cached teacher features, "
        "or identity (the normalised embedding itself; regression base only)"
    )
    projection_dim: int = Field(1024, gt=0, description="K, columns of the projection target (prototypes)")
    local_crops: int = Field(4, ge=0, description="local crops per image (dino, msn), besides the 2 global ones")
    local_resolution: int | None = Field(None, gt=0, description="side of the local crops (default: half the student's)")
    global_scale: tuple[float, float] = Field((0.4, 1.0), description="area range of the global crops")
    local_scale: tuple[float, float] = Field((0.05, 0.4), description="area range of the local crops")
    teacher_crops: Literal["online", "bank"] = Field(
        "online", description="the teacher's outputs on the global crops: online, or from a cached bank of global crops (approximation)"
    )
    bank_repeats: int = Field(8, ge=2, description="teacher_crops=bank: global crops per image in the bank (two distinct ones per step)")
    same_view_pairs: bool = Field(False, description="dino / regression: also pair each global crop with itself")
    center: Literal["constant", "ema", "none"] | None = Field(
        None, description="dino: the teacher target's centre (default: constant; none with target=logits, plain soft distillation)"
    )
    center_momentum: float = Field(0.9, ge=0, lt=1, description="dino, center=ema: c <- m c + (1 - m) mean(t)")
    teacher_temperature: float | None = Field(None, gt=0, description="dino: τ_t, fixed (default 0.04; 1 with target=logits)")
    student_temperature: float | None = Field(None, gt=0, description="dino: τ_s (default 0.1; 1 with target=logits)")
    student_prototypes: Literal["own", "teacher_frozen"] = Field(
        "own", description="dino, msn: the student's last layer / prototypes are its own, or the target's columns (the projection "
        "columns or the teacher head's last layer / prototypes), frozen"
    )
    head_hidden: int = Field(1024, gt=0, description="hidden width of the student's projection head")
    bottleneck: int = Field(256, gt=0, description="dino, msn: width before the last layer / the prototypes")
    head: Literal["byol", "simsiam"] = Field("byol", description="regression: predictor shape (byol: MLP with BN; simsiam: bottleneck)")
    msn_temperature: float = Field(0.1, gt=0, description="msn: τ of the prototype probabilities")
    sharpen_temperature: float = Field(0.25, gt=0, description="msn: target sharpening T")
    memax_weight: float = Field(1.0, ge=0, description="msn: weight of ME-MAX (0: off)")
    patch_drop: float = Field(
        0.15, ge=0, lt=1, description="msn, ViT students: share of patch tokens dropped from the global (anchor) crops, as MSN masks its "
        "anchor view (no effect on students without patch tokens)"
    )

    def inactive(self) -> set[str]:
        unused = set() if self.teacher_crops == "bank" else {"bank_repeats"}
        if self.base != "msn":
            unused |= {"msn_temperature", "sharpen_temperature", "memax_weight", "patch_drop"}
        if self.target != "projection":
            unused |= {"projection_init", "projection_dim"}
        if self.target != "head":
            unused |= {"teacher_head", "teacher_head_prefix", "teacher_prototypes"}
        return unused

    def effective(self, field: str):
        if field == "center" and self.center is None:
            return "none" if self.target == "logits" else "constant"
        return super().effective(field)

    @model_validator(mode="after")
    def _consistent(self) -> "RoBConfig":
        if self.target == "projection" and self.projection_init == "identity" and self.base != "regression":
            raise ValueError("projection_init=identity is for base=regression only (dino and msn need K prototypes)")
        if self.student_prototypes == "teacher_frozen" and self.target == "logits":
            raise ValueError("student_prototypes=teacher_frozen reuses the target's columns: set target=projection or head")
        if (self.target == "head") != (self.teacher_head is not None):
            raise ValueError("target=head reads the head from method.teacher_head=CHECKPOINT, and only target=head does")
        return self


class RoB(DistillMethod):
    name = "rob"
    config_class = RoBConfig
    label = "RoB"
    description = "RoB: a joint-embedding SSL method (DINO, BYOL/SimSiam regression, MSN) whose target branch is the frozen teacher"

    def __init__(self, cfg, students, signals, **context) -> None:
        super().__init__(cfg, students, signals, **context)
        m = cfg.method
        self.signal = self.signals["teacher"]
        columns = self.prepared.get("columns")  # [D_t, K] fixed unit columns of the projection target
        width = self.target_width(columns)
        dim = self.student.dim
        if m.base == "regression":
            if m.head == "byol":
                self.head = nn.Sequential(mlp([dim, m.head_hidden, width], bn="hidden"), mlp([width, m.head_hidden, width], bn="hidden"))
            else:
                self.head = nn.Sequential(mlp([dim, m.head_hidden, width], bn="all"), mlp([width, m.head_hidden // 4, width], bn="hidden"))
        else:
            self.head = mlp([dim, m.head_hidden, m.bottleneck if m.student_prototypes == "own" else columns.shape[0]], bn="hidden", act="gelu")
            if m.student_prototypes == "own":
                self.prototypes = nn.Parameter(F.normalize(torch.randn(width, m.bottleneck), dim=1))
        if m.base == "dino":
            self.register_buffer("dino_center", self.prepared.get("center", torch.zeros(width)).clone())

    def target_width(self, columns: torch.Tensor | None) -> int:
        if self.cfg.method.target == "logits":
            return self.signal.dim
        if columns is not None:
            return columns.shape[1]
        head = head_params(self.prepared)
        if not head:  # projection_init=identity: the normalised embedding itself
            return self.signal.dim
        layers = sum(1 for key in head if key.startswith("linear") and key.endswith(".weight"))
        return head[f"linear{layers - 1}.weight"].shape[0]

    # ----- declarations --------------------------------------------------------------------------
    @classmethod
    def teacher_needs(cls, cfg: DistillConfig) -> dict:
        m = cfg.method
        tap = "logits" if m.target == "logits" else "pooled"
        if m.teacher_crops == "bank":
            return {"teacher": TeacherNeed("bank", tap=tap, repeats=m.bank_repeats, crop_scale=tuple(m.global_scale))}
        return {"teacher": TeacherNeed("augmented", tap=tap)}

    @classmethod
    def train_views(cls, cfg: DistillConfig, ctx) -> dict:
        """The global crops (rendered at the teacher's resolution; with a bank, ``BankCrops`` replays them instead) and the
        local crops at theirs."""
        m = cfg.method
        views = {}
        if m.teacher_crops == "online":
            teacher = ctx.teacher(tap="logits" if m.target == "logits" else "pooled").preprocess
            scale = {"crop_scale_min": m.global_scale[0], "crop_scale_max": m.global_scale[1]}
            views = {name: augmented_view(teacher.resolution, cfg.aug.model_copy(update=scale), teacher.interpolation) for name in GLOBAL}
        if m.base != "regression":
            local = m.local_resolution or max(8, cfg.student.resolution // 2)
            for i in range(m.local_crops):
                scale = {"crop_scale_min": m.local_scale[0], "crop_scale_max": m.local_scale[1]}
                views[f"local{i}"] = augmented_view(local, cfg.aug.model_copy(update=scale))
        return views

    @classmethod
    def prepare(cls, cfg: DistillConfig, ctx) -> Preparation | None:
        """The projection columns (from the cache for k-means) and, for dino with center=constant, the centre: the mean
        teacher target over one pass of global crops of the training images (each crop seeded per image)."""
        m, tensors = cfg.method, {}
        if m.target == "head":  # the checkpoint's own head; its last layer doubles as the columns (teacher_frozen prototypes)
            head = read_ssl_head(m.teacher_head, m.teacher_head_prefix, m.teacher_prototypes)
            if head["linear0.weight"].shape[1] != ctx.teacher(tap="pooled").dim:
                raise ConfigError(
                    f"the teacher head in {m.teacher_head} takes {head['linear0.weight'].shape[1]}-d inputs but the teacher's pooled output is "
                    f"{ctx.teacher(tap='pooled').dim}-d: pair the head with its own backbone (teacher.weights)"
                )
            tensors.update({f"head.{key}": value for key, value in head.items()})
            if "last" in head:
                tensors["columns"] = head["last"].T.contiguous()
        if m.target == "projection" and m.projection_init != "identity":
            features = ctx.features(tap="pooled")
            if m.projection_init == "kmeans":
                if m.projection_dim > len(features):
                    raise ConfigError(
                        f"method.projection_dim={m.projection_dim} k-means columns need as many training images, there are {len(features)}: "
                        "lower method.projection_dim or set method.projection_init=random"
                    )
                _, centroids = ctx.kmeans(m.projection_dim, seed=cfg.trainer.seed, what="RoB's k-means projection target")
                tensors["columns"] = F.normalize(centroids.float(), dim=1).T.contiguous()
            else:
                generator = torch.Generator().manual_seed(cfg.trainer.seed)
                tensors["columns"] = F.normalize(torch.randn(features.shape[1], m.projection_dim, generator=generator), dim=0)
        dataset = None
        if m.teacher_crops == "bank":  # the bank the teacher need reads (the provider read it once, for both)
            table, params = ctx.bank(m.bank_repeats, tap=cls.teacher_needs(cfg)["teacher"].tap, crop_scale=tuple(m.global_scale))
            dataset = BankCrops(ctx.source, params, m.bank_repeats, cfg.student.resolution, len(GLOBAL), cls.train_views(cfg, ctx), name="global")
        if m.base == "dino" and m.effective("center") == "constant":
            if m.teacher_crops == "bank":  # one pass over the bank's global crops
                tensors["center"] = cls.project(table.float(), tensors, m).mean(0)
            else:
                tensors["center"] = cls.constant_center(cfg, ctx, tensors)
        return Preparation(dataset=dataset, tensors=tensors)

    @classmethod
    def batch_layout(cls, cfg: DistillConfig, ctx) -> BatchLayout | None:
        if cfg.method.teacher_crops == "online":
            return None
        views = {name: cfg.student.resolution for name in GLOBAL} | {name: view.resolution for name, view in cls.train_views(cfg, ctx).items()}
        rows = len(ctx.source) * cfg.method.bank_repeats
        return BatchLayout(views, ("bank_row0", "bank_row1"), {"bank_row0": rows, "bank_row1": rows})

    @classmethod
    def constant_center(cls, cfg: DistillConfig, ctx, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """The mean teacher target over one pass of global crops, one per training image, by the provider (each crop
        seeded from (seed, image): the same whatever data.num_workers and whatever the global RNG drew before)."""
        m = cfg.method
        view = cls.train_views(cfg, ctx)["global0"]
        return ctx.mean_output(view, lambda out: cls.project(out, tensors, m), tap=cls.teacher_needs(cfg)["teacher"].tap)

    @staticmethod
    def project(teacher_output: torch.Tensor, tensors: dict[str, torch.Tensor], m: RoBConfig) -> torch.Tensor:
        """The teacher target: its logits, its own head's output, or n(z) times the fixed columns (identity: n(z))."""
        if m.target == "logits":
            return teacher_output.float()
        if m.target == "head":
            return ssl_head(teacher_output, {key: value.to(teacher_output.device) for key, value in head_params(tensors).items()})
        z = F.normalize(teacher_output.float(), dim=1)
        columns = tensors.get("columns")
        return z if columns is None else z @ columns.to(z.device)

    # ----- training ------------------------------------------------------------------------------
    @staticmethod
    def dino_temperatures(m: RoBConfig) -> tuple[float, float]:
        """dino: (τ_s, τ_t), 1 and 1 with target=logits (plain soft distillation), else 0.1 and 0.04 unless set."""
        default = (1.0, 1.0) if m.target == "logits" else (0.1, 0.04)
        return (m.student_temperature or default[0], m.teacher_temperature or default[1])

    def student_outputs(self, images: torch.Tensor) -> torch.Tensor:
        """Student logits over the K targets (dino, msn: cosine to the prototypes; dino with target=logits: a plain linear
        layer; regression: the prediction)."""
        m = self.cfg.method
        out = self.head(self.student(images))
        if m.base == "regression":
            return out
        if m.student_prototypes == "teacher_frozen":
            return F.normalize(out, dim=1) @ self.prepared["columns"]
        if m.base == "dino" and m.target == "logits":
            # plain soft distillation (τ_s = 1): the student's logits are a plain linear layer, unbounded; cosines in
            # [-1, 1] at τ_s = 1 cannot make a softmax over C classes peaked (max probability e / (e + (C-1)/e))
            return out @ self.prototypes.T
        return F.normalize(out, dim=1) @ F.normalize(self.prototypes, dim=1).T

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        m, views, index = self.cfg.method, batch["views"], batch["index"]
        with torch.no_grad():
            if m.teacher_crops == "bank":
                targets = [self.project(self.signal(batch[f"bank_row{g}"]), self.prepared, m) for g in range(len(GLOBAL))]
            else:
                targets = [self.project(self.signal(index, views[name]), self.prepared, m) for name in GLOBAL]
        size = (self.cfg.student.resolution,) * 2
        crops = [views[name] if views[name].shape[-2:] == size else F.interpolate(views[name], size=size, mode="bilinear", antialias=True)
                 for name in GLOBAL]
        locals_ = [views[name] for name in sorted(views) if name.startswith("local")]
        # the student on every crop, batched per resolution
        with patch_dropout(self.student, m.patch_drop if m.base == "msn" else 0.0):  # MSN's masked anchors (ViT students)
            outputs = list(self.student_outputs(torch.cat(crops)).chunk(len(crops)))
        if locals_:
            outputs += list(self.student_outputs(torch.cat(locals_)).chunk(len(locals_)))
        if m.base == "dino":
            s_temp, t_temp = self.dino_temperatures(m)
            center = None if m.effective("center") == "none" else self.dino_center
            loss = dino_cross_entropy(outputs, targets, [0, 1], center, s_temp, t_temp, m.same_view_pairs)
            if m.effective("center") == "ema":
                with torch.no_grad():
                    # the batch mean over every rank's targets (DINO's all-reduced centre; the local mean in one process)
                    batch_center = global_mean_nograd(torch.cat(targets))
                    self.dino_center.mul_(m.center_momentum).add_(batch_center, alpha=1 - m.center_momentum)
            terms = {}
        elif m.base == "regression":
            pairs = [(0, 1), (1, 0)] + ([(0, 0), (1, 1)] if m.same_view_pairs else [])
            loss = sum(regression_loss(outputs[a], targets[b]) for a, b in pairs) / len(pairs) * 2
            terms = {}
        else:
            probabilities = torch.softmax(torch.cat(outputs).float() / m.msn_temperature, dim=1)
            with torch.no_grad():  # sharpened teacher targets of the two global crops, equipartitioned over the global batch
                sharp = [sinkhorn(sharpen(torch.softmax(t / m.msn_temperature, dim=1), m.sharpen_temperature), all_ranks=True)
                         for t in targets]
            # anchor view v (global crops first, then the focal ones) predicts the target of global crop v mod 2
            cross = msn_cross_entropy(probabilities, torch.cat([sharp[v % 2] for v in range(len(outputs))]))
            regulariser = memax(probabilities, all_ranks=True)  # the mean prediction over every rank's anchors
            loss = cross + m.memax_weight * regulariser
            terms = {"cross_entropy": cross, "memax": regulariser}
        return self.log_loss(loss, **terms)
