"""RoB's teacher targets. The target is the teacher checkpoint's own self-supervised head when it has one (``head``: its
DINO / MSN head read from ``teacher_head``, models/ssl_head.py); the teachers we ship are supervised classifiers without
one, so the target is then ``logits`` (the teacher's classifier logits) or ``projection``: the normalised teacher
embedding times K fixed unit columns (``projection_init``: seeded ``random``, ``kmeans`` centroids of the cached teacher
features, or ``identity``, the normalised embedding itself, for the regression base)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ssdistill.config import DistillConfig
from ssdistill.errors import ConfigError
from ssdistill.methods.rob.config import RoBConfig
from ssdistill.models.ssl_head import read_ssl_head, ssl_head

GLOBAL = ("global0", "global1")  # the two global crops: the teacher's views, the student's too


def target_tap(m: RoBConfig) -> str:
    """The teacher output the targets are made of."""
    return "logits" if m.target == "logits" else "pooled"


def head_params(tensors: dict) -> dict[str, torch.Tensor]:
    """The teacher head's tensors among a preparation's (stored as ``head.<name>``)."""
    return {key[len("head.") :]: value for key, value in tensors.items() if key.startswith("head.")}


def target_tensors(cfg: DistillConfig, ctx) -> dict[str, torch.Tensor]:
    """What the targets read, prepared once: the teacher head's tensors (``head.<name>``; its last layer doubles as the
    ``columns``, for teacher_frozen prototypes) or the projection's ``columns`` [D_t, K] (k-means from the cache, or
    seeded random)."""
    m, tensors = cfg.method, {}
    if m.target == "head":
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
    return tensors


def project(teacher_output: torch.Tensor, tensors: dict[str, torch.Tensor], m: RoBConfig) -> torch.Tensor:
    """The teacher target: its logits, its own head's output, or n(z) times the fixed columns (identity: n(z))."""
    if m.target == "logits":
        return teacher_output.float()
    if m.target == "head":
        return ssl_head(teacher_output, {key: value.to(teacher_output.device) for key, value in head_params(tensors).items()})
    z = F.normalize(teacher_output.float(), dim=1)
    columns = tensors.get("columns")
    return z if columns is None else z @ columns.to(z.device)


def target_width(m: RoBConfig, teacher_dim: int, tensors: dict[str, torch.Tensor]) -> int:
    """K, the width of the targets (``teacher_dim``: the width of the teacher output they are made of)."""
    if m.target == "logits":
        return teacher_dim
    columns = tensors.get("columns")
    if columns is not None:
        return columns.shape[1]
    head = head_params(tensors)
    if not head:  # projection_init=identity: the normalised embedding itself
        return teacher_dim
    layers = sum(1 for key in head if key.startswith("linear") and key.endswith(".weight"))
    return head[f"linear{layers - 1}.weight"].shape[0]
