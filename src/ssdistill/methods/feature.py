"""Feature distillation (regression baseline), from one teacher or several (docs/methods/multi-teacher.md, the RADIO / UNIC / Theia
family): the student backbone feeds one adaptor head per teacher, and each head regresses its teacher's embedding of
the same image. Teachers may differ in resolution and width. With one teacher this is plain feature regression.

Per-teacher targets are normalised before the loss (``target_norm``): ``center`` (minus the batch mean), ``batch``
(per-dimension batch standardisation), ``teacher`` (per-dimension standardisation with each teacher's mean and std
over its cached original-view features of the training images: fixed statistics, so teachers of different scales
weigh alike), or ``none``. The loss of each teacher is weighted (``teacher_weights``, default 1) and averaged over
the teachers; ``teacher_drop`` leaves each teacher's term out of a step with that probability (at least one kept,
the kept ones re-weighted to the same total). Where the targets come from (``teacher_view``: original / same / bank)
is described in ``methods/paired.py``.

``relational: seed`` adds a relational term on top of the regression (the recipe ablation of issue 23): SEED's soft
cross-entropy between similarity distributions (docs/methods/baselines.md) with the step's own batch as the key set instead of a
queue: for image i, the student's head output s_i (normalised) is compared with the normalised targets t_j of the
batch, logits [<s_i, t_i>, <s_i, t_j> (j != i)] / τ_s, trained towards softmax([<t_i, t_i>, <t_i, t_j>] / τ_t).
The batch's own key is left out of the "queue" part (it is the first column already). Weighted by
``relational_weight`` and added to each teacher's regression term.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ssdistill.config import DistillConfig
from ssdistill.data.mixing import batch_cutmix
from ssdistill.engine.contract import Preparation
from ssdistill.engine.module import DistillMethod
from ssdistill.errors import ConfigError
from ssdistill.labels import teacher_label
from ssdistill.losses.infonce import batch_similarity_distribution_loss
from ssdistill.losses.regression import center_batch, feature_regression_loss, standardize_batch, standardize_with
from ssdistill.methods.paired import PairedViewConfig, TeacherView, paired_need
from ssdistill.models.heads import mlp


class FeatureConfig(PairedViewConfig):
    name: Literal["feature"] = "feature"
    loss: Literal["cosine", "mse", "smooth_l1", "cosine_smooth_l1"] = Field(
        "cosine", description="regression loss (cosine_smooth_l1: their sum, as the multi-teacher recipes)"
    )
    projector_hidden: list[int] = Field(
        default_factory=lambda: [2048], description="hidden widths of each teacher's adaptor head ([] = one linear layer)"
    )
    target_norm: Literal["center", "batch", "teacher", "none"] = Field(
        "center",
        description="teacher targets before the loss: center = minus batch mean, batch = per-dimension standardised, "
        "teacher = standardised with the teacher's statistics over its cached training features, none = raw",
    )
    teacher_view: TeacherView = Field(
        "original",
        description="teacher target from the original view (cacheable), the student's own augmented crop (online), "
        "or a cached augmentation bank of bank_repeats crops per image (approximation)",
    )
    teacher_weights: dict[str, float] = Field(
        default_factory=dict, description="weight of each named teacher's loss (default 1); the weighted losses are averaged"
    )
    teacher_drop: float = Field(0.0, ge=0, lt=1, description="probability that a teacher's term is left out of a step (at least one teacher kept)")
    mix: Literal["none", "mixup", "cutmix"] = Field(
        "none",
        description="mix each step's crops with a shuffled copy of the batch before both the student and the teacher see "
        "them (function matching on mixed images; needs teacher_view=same, as the teacher must see the mixed image)",
    )
    mix_alpha: float = Field(1.0, gt=0, description="mixup: the mixing weight is drawn from Beta(mix_alpha, mix_alpha)")
    relational: Literal["none", "seed"] = Field(
        "none",
        description="a relational term on top of the regression: seed = SEED's similarity-distribution loss with the "
        "step's batch of targets as its keys (the module docstring)",
    )
    relational_weight: float = Field(1.0, ge=0, description="weight of the relational term against each teacher's regression term")
    relational_student_temperature: float = Field(0.2, gt=0, description="τ_s of the relational term (SEED's)")
    relational_teacher_temperature: float = Field(
        0.05,
        gt=0,
        description="τ_t of the relational term: softer than SEED's 1e-4, which with batch keys would reduce the target to the image's own key",
    )

    def inactive(self) -> set[str]:
        relational = set() if self.relational != "none" else {"relational_weight", "relational_student_temperature", "relational_teacher_temperature"}
        return super().inactive() | (set() if self.mix == "mixup" else {"mix_alpha"}) | relational


class FeatureDistillation(DistillMethod):
    name = "feature"
    config_class = FeatureConfig
    label = "feature regression"
    description = "feature regression from one or several teachers: one adaptor head per teacher (cosine / MSE / smooth-L1)"

    def __init__(self, cfg, students, signals, **context) -> None:
        super().__init__(cfg, students, signals, **context)
        m = cfg.method
        unknown = sorted(set(m.teacher_weights) - set(cfg.teachers))
        if unknown:
            raise ConfigError(f"method.teacher_weights names no teacher: {', '.join(unknown)} (teachers: {', '.join(cfg.teachers)})")
        self.targets = {name: teacher_label(name) for name in cfg.teachers}  # teacher name -> signal name
        heads = {name: mlp([self.student.dim, *m.projector_hidden, self.signals[label].dim], bn="hidden") for name, label in self.targets.items()}
        if len(heads) == 1:
            self.projector = next(iter(heads.values()))  # one teacher: the plain regression head (checkpoint keys as before)
        else:
            self.projectors = nn.ModuleDict(heads)

    def head(self, teacher: str) -> nn.Module:
        return self.projector if hasattr(self, "projector") else self.projectors[teacher]

    @classmethod
    def teacher_needs(cls, cfg: DistillConfig) -> dict:
        if cfg.method.mix != "none" and cfg.method.teacher_view != "same":
            raise ConfigError(
                f"method.mix={cfg.method.mix} needs the teacher to see the mixed image: set method.teacher_view=same "
                "(a cached teacher output is of an unmixed image)"
            )
        if cfg.method.teacher_view == "bank" and len(cfg.teachers) > 1:
            raise ConfigError("several teachers need teacher_view=original or same (one augmentation bank is replayed per run)")
        return {teacher_label(name): paired_need(cfg.method, name) for name in cfg.teachers}

    @classmethod
    def train_views(cls, cfg: DistillConfig, ctx) -> dict:
        return cfg.method.pairing.views(cfg, ctx)

    @classmethod
    def prepare(cls, cfg: DistillConfig, ctx) -> Preparation | None:
        if cfg.method.target_norm != "teacher":
            return None
        statistics = {}
        for name in cfg.teachers:  # over the original-view features of the training images (the cache)
            table = ctx.features(name).float()
            statistics[f"{name}:mean"], statistics[f"{name}:std"] = table.mean(0), table.std(0, unbiased=False)
        return Preparation(tensors=statistics)

    def _normalise(self, teacher: str, target: torch.Tensor) -> torch.Tensor:
        norm = self.cfg.method.target_norm
        if norm == "batch":
            return standardize_batch(target)
        if norm == "center":
            return center_batch(target)
        if norm == "teacher":
            return standardize_with(target, self.prepared[f"{teacher}:mean"], self.prepared[f"{teacher}:std"])
        return target

    def terms_differ_across_ranks(self) -> bool:  # teacher drop draws each process's kept teachers on its own
        return self.cfg.method.teacher_drop > 0 and len(self.targets) > 1

    def _kept(self) -> list[str]:
        names = list(self.targets)
        p = self.cfg.method.teacher_drop
        if p == 0 or len(names) == 1:
            return names
        keep = torch.rand(len(names)) >= p
        if not keep.any():
            keep[int(torch.randint(len(names), (1,)))] = True
        return [name for name, kept in zip(names, keep.tolist()) if kept]

    def _mixed(self, batch: dict) -> dict:
        """``method.mix``: the step's shared crops (teacher resolution; the student's view is resized from them) mixed
        with a shuffled copy of the batch, mixup with λ ~ Beta(α, α) or one cutmix box; the engine seeds the draw per step."""
        mix = self.cfg.method.mix
        if mix == "none":
            return batch
        shared = batch["views"]["shared"]
        other = shared[torch.randperm(len(shared)).to(shared.device)]
        if mix == "mixup":
            alpha = torch.tensor(float(self.cfg.method.mix_alpha))
            lam = float(torch.distributions.Beta(alpha, alpha).sample())
            mixed = lam * shared + (1.0 - lam) * other
        else:
            mixed, _ = batch_cutmix(shared, other)
        return {**batch, "views": {**batch["views"], "shared": mixed}}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        m = self.cfg.method
        batch = self._mixed(batch)
        features = self.student(m.pairing.student_images(batch, self.cfg.student.resolution))
        kept = self._kept()
        weights = {name: m.teacher_weights.get(name, 1.0) for name in self.targets}
        scale = sum(weights.values()) / max(sum(weights[name] for name in kept), 1e-12)  # dropped terms keep the total
        terms = {}
        for name in kept:
            target = self._normalise(name, m.pairing.target(batch, self.signals[self.targets[name]]))
            output = self.head(name)(features)
            terms[name] = feature_regression_loss(output, target, m.loss)
            if m.relational == "seed":
                terms[name] = terms[name] + m.relational_weight * batch_similarity_distribution_loss(
                    output, target, m.relational_student_temperature, m.relational_teacher_temperature
                )
        if len(self.targets) == 1:
            return self.log_loss(next(iter(terms.values())))
        loss = sum(scale * weights[name] * value for name, value in terms.items()) / len(self.targets)
        return self.log_loss(loss, **{f"loss_{name}": value.detach() for name, value in terms.items()})
