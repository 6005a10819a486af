"""MV-MR: multi-view, multi-representation dependence maximisation (docs/methods/mvmr.md).

One student encoder (backbone + projector) sees an augmented view x̃ and the original view x⁰ in two
passes. The loss ties z̃ and z⁰ (MSE + 1 - dCor), keeps every dimension's std above γ on both, and
maximises the distance correlation between z̃ and non-learnable representations of x⁰:
hand-crafted descriptors (self-supervised mode) and/or the frozen teacher's embedding of x⁰ read from
the teacher cache (distillation mode, ``mode: kd``).

``preset: official`` is the released code: the V-statistic dCor, no epsilon in the std hinge, the released sign
(+dCor) of the hand-crafted terms, its voting HOG, its five representations in self-supervised mode, the 8192-wide
projector, and its fp16 device of dividing dCor inputs by 32 (``dcor_input_scaling: official``: both embeddings, the
teacher, raw pixels, scattering and the re-augmented copy, not HOG or local std; with the distance clamp this is
not neutral).
"""

from __future__ import annotations

import re
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch.nn import functional as F

from ssdistill.config import SELECTS, DistillConfig, MethodConfig, official
from ssdistill.data.views import augmented_view, original_view
from ssdistill.engine.contract import Preparation, TeacherNeed
from ssdistill.engine.module import DistillMethod
from ssdistill.errors import ConfigError
from ssdistill.labels import teacher_label
from ssdistill.losses.dependence import distance_correlation
from ssdistill.losses.regression import pca_whitening, whiten_with
from ssdistill.losses.regularisers import std_hinge
from ssdistill.models.handcrafted import HANDCRAFTED, build_representations
from ssdistill.models.heads import mlp

TERMS = ("mse", "std", "views", "teacher", *HANDCRAFTED)
NAMED_TEACHER = re.compile(r"teacher_[A-Za-z][A-Za-z0-9_]*$")  # teacher_<name>: the term of a named teacher (config.teacher_label)
OFFICIAL_SSL_REPRESENTATIONS = ["raw", "hog", "local_std", "scattering", "reaugmented"]  # the released code's five
OFFICIAL_DIVISOR = 32.0  # the released code divides these dCor inputs by 32 (a 16-bit trick); HOG and local std it leaves
OFFICIALLY_SCALED = frozenset({"embedding", "teacher", "raw", "scattering", "reaugmented"})


class MVMRConfig(MethodConfig):
    name: Literal["mvmr"] = "mvmr"
    mode: Literal["kd", "ssl"] = Field(
        "kd", description="kd: the teacher's embedding is a representation; ssl: no teacher", json_schema_extra=SELECTS
    )
    projector: list[int] = Field(
        default_factory=lambda: [2048, 2048, 2048],
        description="projector widths after the backbone (paper: 8192-8192-8192), no bias, BN + ReLU between",
        json_schema_extra=official([8192, 8192, 8192]),
    )
    representations: list[Literal["raw", "hog", "local_std", "scattering", "reaugmented"]] | None = Field(
        None, description="hand-crafted representations of the original view; default: ssl [raw, hog, local_std], kd none"
    )
    weights: dict[str, float] = Field(
        default_factory=dict,
        description=f"per-term weights (default 1): {', '.join(TERMS)}, and teacher_<name> for each further named teacher",
        json_schema_extra=official({}),
    )
    handcrafted_sign: Literal["paper", "released"] = Field(
        "paper",
        description="paper: maximise dCor with hand-crafted terms (1 - dCor); released: official code (+dCor)",
        json_schema_extra=official("released"),
    )
    dcor_clamp: float = Field(1e-4, gt=0, description="clamp on squared pairwise distances inside dCor", json_schema_extra=official(1e-4))
    dcor_estimator: Literal["biased", "unbiased"] = Field(
        "unbiased",
        description="unbiased = bias-corrected dCor² (default; the paper's V-statistic saturates near 1 for wide "
        "embeddings and small batches); biased = the paper's and official code's V-statistic dCor",
        json_schema_extra=official("biased"),
    )
    dcor_input_scaling: Literal["none", "official"] = Field(
        "none",
        description="official: divide the dCor inputs the released code divides by 32 (embeddings, teacher, raw, scattering, "
        "re-augmented; not HOG or local std), which the distance clamp makes not quite neutral; none: unscaled",
        json_schema_extra=official("official"),
    )
    std_gamma: float = Field(1.0, gt=0, description="std hinge margin γ", json_schema_extra=official(1.0))
    std_eps: float = Field(1e-4, ge=0, description="std hinge ε (official code: 0)", json_schema_extra=official(0.0))
    teacher_whitening: Literal["none", "pca"] = Field(
        "none",
        description="pca: each teacher's embedding is PCA-whitened (with shrinkage), fitted once on the training images' "
        "cached embeddings, before its dCor term, so that every direction of the teacher counts and not mostly its first "
        "(ours, docs/methods/mvmr.md#whitened-teacher); none: the teacher's embedding as it is (paper, official code)",
        json_schema_extra=official("none"),
    )
    teacher_on: Literal["embedding", "backbone"] = Field(
        "embedding",
        description="what each teacher's dCor term ties to the teacher: embedding = the projector's output z̃ (paper, official "
        "code); backbone = the student's pooled backbone features of the augmented view, the features that are evaluated and "
        "exported (ours, docs/methods/mvmr.md#teacher-on-the-backbone)",
        json_schema_extra=official("embedding"),
    )
    whitening_shrinkage: float = Field(
        0.1, gt=0, description="teacher_whitening=pca: each direction of variance λ is scaled by (λ + s · mean λ)^-1/2, s this value"
    )
    hog_binning: Literal["fractional", "released"] = Field(
        "fractional", description="HOG vote split (released = official)", json_schema_extra=official("released")
    )

    @field_validator("weights")
    @classmethod
    def _known_terms(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = sorted(k for k in weights if k not in TERMS and not NAMED_TEACHER.match(k))
        if unknown:
            raise ValueError(f"unknown loss term(s) {unknown}; terms are {', '.join(TERMS)} and teacher_<name>")
        return weights

    def chosen_representations(self) -> list[str]:
        if self.representations is not None:
            return list(self.representations)
        return ["raw", "hog", "local_std"] if self.mode == "ssl" else []

    @classmethod
    def official_values(cls, data: dict[str, Any] | None = None) -> dict[str, Any]:
        ssl = (data or {}).get("mode", cls.model_fields["mode"].default) == "ssl"
        return {**super().official_values(data), "representations": list(OFFICIAL_SSL_REPRESENTATIONS) if ssl else []}

    def effective(self, field: str) -> Any:
        if field == "representations":  # compared in a fixed order: the order of the terms does not matter
            return [name for name in HANDCRAFTED if name in self.chosen_representations()]
        if field == "weights":  # a weight of 1 is the default weight
            return {term: weight for term, weight in self.weights.items() if weight != 1.0}
        return super().effective(field)

    def inactive(self) -> set[str]:
        chosen = self.chosen_representations()
        unused = ({"handcrafted_sign"} if not chosen else set()) | ({"hog_binning"} if "hog" not in chosen else set())
        if self.mode != "kd":
            unused |= {"teacher_whitening", "teacher_on"}
        if self.mode != "kd" or self.teacher_whitening == "none":
            unused |= {"whitening_shrinkage"}
        return unused

    def dcor_divisor(self, representation: str) -> float:
        """What the dCor input ``representation`` (embedding, teacher or a hand-crafted name) is divided by."""
        if self.dcor_input_scaling == "official" and representation in OFFICIALLY_SCALED:
            return OFFICIAL_DIVISOR
        return 1.0


class MVMR(DistillMethod):
    name = "mvmr"
    config_class = MVMRConfig
    description = "MV-MR: dCor between views and non-learnable representations (hand-crafted and/or teachers)"

    def __init__(self, cfg, students, signals, **context) -> None:
        super().__init__(cfg, students, signals, **context)
        m, student = cfg.method, self.student
        for key in m.weights:
            if key.startswith("teacher") and key not in self.signals and key != "teacher":
                raise ConfigError(f"method.weights.{key} names no teacher: this run's teacher terms are {', '.join(self.signals) or 'none'}")
        self.projector = mlp([student.dim, *m.projector], bn="hidden", bias=False)
        self.representations = build_representations(m.chosen_representations(), cfg.student.resolution, student.normalize, cfg.aug, m.hog_binning)

    @classmethod
    def teacher_needs(cls, cfg: DistillConfig) -> dict:
        """kd: one dCor term per named teacher, on its cached original view; ssl: no teacher."""
        if cfg.method.mode != "kd":
            return {}
        return {teacher_label(name): TeacherNeed("original", name) for name in cfg.teachers}

    @classmethod
    def deviations(cls, cfg: DistillConfig) -> list[str]:
        """Also: dCor is a statistic of the batch it sees, so gradient accumulation does not give it a larger batch."""
        found = super().deviations(cfg)
        steps = cfg.trainer.accumulate_grad_batches
        if steps > 1:
            found.append(
                f"dcor_batch: {cfg.data.batch_size} images (accumulate_grad_batches={steps} sums the gradients of {steps} dCor "
                f"values, each over one batch of {cfg.data.batch_size}; it is not one dCor over {steps * cfg.data.batch_size}: raise "
                "data.batch_size for that; under DDP, too, each process computes dCor over its own batch)"
            )
        return found

    @classmethod
    def prepare(cls, cfg: DistillConfig, ctx) -> Preparation | None:
        """teacher_whitening=pca: each teacher's whitening, fitted on its cached original-view embeddings of the
        training images (what its signal reads)."""
        m = cfg.method
        if m.mode != "kd" or m.teacher_whitening == "none":
            return None
        tensors = {}
        for name in cfg.teachers:
            label = teacher_label(name)
            tensors[f"{label}:mean"], tensors[f"{label}:whitening"] = pca_whitening(ctx.features(name).float(), m.whitening_shrinkage)
        return Preparation(tensors=tensors)

    @classmethod
    def train_views(cls, cfg: DistillConfig, ctx) -> dict:
        size = cfg.student.resolution
        return {"aug": augmented_view(size, cfg.aug), "original": original_view(size)}

    def _weight(self, term: str) -> float:
        return self.cfg.method.weights.get(term, 1.0)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        terms = self.loss_terms(batch)
        loss = sum(self._weight(name) * value for name, value in terms.items())
        return self.log_loss(loss, **terms)

    def weighted_terms(self, batch: dict) -> dict[str, torch.Tensor]:
        """Each term of the step's loss times its weight (their sum is the loss): what a diagnostic differentiates one
        at a time (benchmarks/mvmr_diagnostics.py)."""
        return {name: self._weight(name) * value for name, value in self.loss_terms(batch).items()}

    def loss_terms(self, batch: dict) -> dict[str, torch.Tensor]:
        """The step's unweighted terms: mse, std, views, each hand-crafted representation's and each teacher's."""
        m = self.cfg.method
        augmented, original = batch["views"]["aug"], batch["views"]["original"]
        h_aug = self.student(augmented)
        z_aug = self.projector(h_aug)  # two passes: separate BatchNorm statistics per view
        z_orig = self.projector(self.student(original))
        scale = m.dcor_divisor("embedding")
        z_aug_dcor, z_orig_dcor = z_aug / scale, z_orig / scale  # the released code's fp16 device (dcor_input_scaling)
        tied_to_teacher = h_aug / scale if m.teacher_on == "backbone" else z_aug_dcor
        dcor = lambda a, b: distance_correlation(a, b, clamp=m.dcor_clamp, estimator=m.dcor_estimator)  # noqa: E731
        terms = {
            "mse": F.mse_loss(z_orig.float(), z_aug.float()),
            "std": std_hinge(z_aug, m.std_gamma, m.std_eps) + std_hinge(z_orig, m.std_gamma, m.std_eps),
            "views": 1 - dcor(z_orig_dcor, z_aug_dcor),
        }
        for name, represent in self.representations.items():
            dependence = dcor(represent(original) / m.dcor_divisor(name), z_aug_dcor)
            terms[name] = (1 - dependence) if m.handcrafted_sign == "paper" else dependence
        for name, signal in self.signals.items():  # teacher terms are always maximised (1 - dCor)
            target = signal.for_batch(batch).detach().float()
            if m.teacher_whitening == "pca":
                target = whiten_with(target, self.prepared[f"{name}:mean"], self.prepared[f"{name}:whitening"])
            terms[name] = 1 - dcor(target / m.dcor_divisor("teacher"), tied_to_teacher)
        return terms
