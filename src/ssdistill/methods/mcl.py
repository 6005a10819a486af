"""MCL, Mutual Contrastive Learning (docs/methods/mcl.md): a cohort of M students trained together, no teacher. Each member
contrasts its own embeddings (vanilla, VCL) and its embeddings against a peer's (interactive, ICL), and matches its
peers' contrastive distributions by KL (soft VCL, soft ICL); the terms are ``losses/mutual.py``.

* ``mode: label_free`` (default, 4.3): per member a MoCo head, an EMA key encoder and a queue; all queues are
  column-aligned (one pointer, one id per column), so column j of every queue holds a key of the same image. Both views
  are the same for every member. ℓ_ab = [⟨q_a, k_b⟩, q_a Q_bᵀ] / τ.
* ``mode: supervised`` (4.4, the papers' main setting; needs class sub-folders): one view seen by every member, a
  classifier per member trained with cross-entropy, in-batch similarities S^{ab} = v_a v_bᵀ / τ with same-class
  positives, two images per class in every batch; optional logit KD towards the cohort's mean logits (every member,
  where the official code trains only the last one when M > 2).

The members are the run's students: ``student`` (the headline row, ``method.cohort[0]``) and ``peer1`` … ``peer{M-1}``,
each seeded with ``trainer.seed + i``; all share ``student.resolution``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import nn
from torch.nn import functional as F

from ssdistill.config import SELECTS, DistillConfig, StudentConfig
from ssdistill.data.sampling import ClassPairBatchSampler
from ssdistill.data.views import augmented_view
from ssdistill.engine.contract import Preparation
from ssdistill.engine.module import DistillMethod
from ssdistill.errors import ConfigError
from ssdistill.labels import PRIMARY_STUDENT
from ssdistill.losses.distill import distill_kl
from ssdistill.losses.infonce import logits_nce, positive_first_ce, queue_logits
from ssdistill.losses.mutual import class_positive_masks, mutual_contrastive_terms
from ssdistill.methods.moco import Query
from ssdistill.methods.queued import QueueConfig, excluded_keys, key_queue
from ssdistill.models.batchnorm import grouped_forward
from ssdistill.models.heads import mlp
from ssdistill.models.momentum import momentum_copy, momentum_update

# the official values of each mode (MoCo+MCL of github.com/winycg/MCL for label_free; its CIFAR code for supervised)
OFFICIAL = {
    "label_free": {
        "head": "linear",
        "head_hidden": None,
        "out_dim": 128,
        "temperature": 0.07,
        "kl_temperature": 3.0,
        "vcl_weight": 1.0,
        "icl_weight": 1.0,
        "soft_vcl_weight": 1.0,
        "soft_icl_weight": 1.0,
        "momentum": 0.999,
        "queue_size": 65536,
        "mask_same_id": False,
    },
    "supervised": {
        "head": "mlp",
        "head_hidden": None,
        "out_dim": 128,
        "temperature": 0.1,
        "kl_temperature": 3.0,
        "vcl_weight": 0.1,
        "icl_weight": 0.1,
        "soft_vcl_weight": 1.0,
        "soft_icl_weight": 1.0,
        "icl_include_self_pair": False,
        "logit_kd_weight": 0.0,
    },
}
# ssdistill's defaults where a field is left unset (None): label-free uses MoCo-v2's head and τ
DEFAULTS = {
    "label_free": {"head": "mlp", "temperature": 0.2, "vcl_weight": 1.0, "icl_weight": 1.0},
    "supervised": {"head": "mlp", "temperature": 0.1, "vcl_weight": 0.1, "icl_weight": 0.1},
}
MODE_FIELDS = {
    "label_free": {"momentum", "bn_groups", "queue_size", "mask_same_id"},
    "supervised": {"icl_include_self_pair", "logit_kd_weight"},
}


def member_name(position: int) -> str:
    return PRIMARY_STUDENT if position == 0 else f"peer{position}"


# the official CIFAR codes of MCL and L-MCL: padded crops and flips, SGD with Nesterov momentum, no warm-up
CIFAR_RECIPE = {
    "aug.recipe": "cifar_basic",
    "optim.optimizer": "sgd",
    "optim.lr": 0.1,
    "optim.momentum": 0.9,
    "optim.nesterov": True,
    "optim.weight_decay": 5e-4,
    "optim.warmup_epochs": 0.0,
}


def supervised_recipe_deviations(cfg: DistillConfig) -> list[str]:
    """Where the run's view and optimiser differ from the official supervised CIFAR recipe (``CIFAR_RECIPE``)."""

    def shown(value: Any) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)

    notes = []
    for key, official in CIFAR_RECIPE.items():
        section, field = key.split(".")
        value = getattr(getattr(cfg, section), field)
        if not (math.isclose(value, official) if isinstance(official, float) else value == official):
            notes.append(f"{key}: {shown(value)} (official: {shown(official)})")
    return notes


class MCLConfig(QueueConfig):
    name: Literal["mcl"] = "mcl"
    mode: Literal["label_free", "supervised"] = Field(
        "label_free",
        description="label_free: MoCo-style cohort with instance positives (4.3); supervised: cross-entropy and class positives, "
        "needs class sub-folders (4.4)",
        json_schema_extra=SELECTS,
    )
    cohort: list[str] | None = Field(
        None,
        description="timm architectures of the members, M >= 2 (heterogeneous allowed); default: two of student.arch",
        json_schema_extra=SELECTS,
    )
    head: Literal["mlp", "linear"] | None = Field(
        None, description="embedding head: mlp (MoCo-v2 head / the official Embed) or linear (MoCo-v1); default mlp"
    )
    head_hidden: int | None = Field(
        None,
        gt=0,
        description="hidden width of the mlp head (default: the backbone's width label-free, as MoCo-v2; the "
        "embedding width supervised, as the official Embed)",
    )
    out_dim: int = Field(128, gt=0, description="embedding width")
    temperature: float | None = Field(None, gt=0, description="contrastive temperature τ (default: 0.2 label-free, 0.1 supervised)")
    kl_temperature: float = Field(3.0, gt=0, description="temperature T of the soft terms' KL (and of the logit KD)")
    vcl_weight: float | None = Field(None, ge=0, description="α, vanilla contrastive (default: 1 label-free, 0.1 supervised)")
    icl_weight: float | None = Field(None, ge=0, description="β, interactive contrastive (default: 1 label-free, 0.1 supervised)")
    soft_vcl_weight: float = Field(1.0, ge=0, description="γ, soft vanilla (KL to each peer's vanilla distribution)")
    soft_icl_weight: float = Field(1.0, ge=0, description="λ, soft interactive (KL between the two directions of each pair)")
    momentum: float = Field(0.999, ge=0, le=1, description="label_free: key-encoder EMA momentum")
    bn_groups: int = Field(4, ge=1, description="label_free: key batch split into this many sub-batches for BatchNorm (shuffle-BN stand-in)")
    icl_include_self_pair: bool = Field(
        False,
        description="supervised: the same image in the other network is a positive of ICL (official: left out of "
        "positives and denominator, the diagonal mask reused)",
    )
    logit_kd_weight: float = Field(
        0.0, ge=0, description="supervised: weight of KL_T(logits_m ‖ sg mean of the cohort's logits), applied to every member"
    )

    @field_validator("cohort")
    @classmethod
    def _a_cohort(cls, cohort: list[str] | None) -> list[str] | None:
        if cohort is not None and len(cohort) < 2:
            raise ValueError(f"method.cohort lists M >= 2 timm architectures, got {cohort}")
        return cohort

    @classmethod
    def official_values(cls, data: dict[str, Any] | None = None) -> dict[str, Any]:
        return dict(OFFICIAL[(data or {}).get("mode") or cls.model_fields["mode"].default])

    def inactive(self) -> set[str]:
        other = "supervised" if self.mode == "label_free" else "label_free"
        return MODE_FIELDS[other] | ({"head_hidden"} if self.effective("head") == "linear" else set())

    def effective(self, field: str) -> Any:
        value = getattr(self, field)
        if value is None and field in DEFAULTS[self.mode]:
            return DEFAULTS[self.mode][field]
        return value

    def architectures(self, student: StudentConfig) -> list[str]:
        return list(self.cohort) if self.cohort is not None else [student.arch, student.arch]


class CohortMethod(DistillMethod):
    """What MCL and L-MCL declare alike. Their configs have ``mode`` (label_free | supervised) and
    ``architectures(student)``; their losses the four mutual terms (``vcl``, ``icl``, ``soft_vcl``, ``soft_icl``)
    weighted by ``vcl_weight``, ``icl_weight`` (resolved by mode), ``soft_vcl_weight`` and ``soft_icl_weight``.

    The members are ``student``, ``peer1`` ..., one per architecture; no teacher; one augmented view seen by every
    member (supervised) or two (label-free: query and key); supervised batches hold two images of every class, and a
    view or optimiser other than the official CIFAR recipe's is a recorded departure. A supervised member's classifier
    is rebuilt from a checkpoint's ``classifier_prefix`` keys."""

    @classmethod
    def student_members(cls, cfg: DistillConfig) -> dict[str, StudentConfig]:
        return {member_name(i): cfg.student.model_copy(update={"arch": arch}) for i, arch in enumerate(cfg.method.architectures(cfg.student))}

    @classmethod
    def teacher_needs(cls, cfg: DistillConfig) -> dict:
        return {}

    @classmethod
    def train_views(cls, cfg: DistillConfig, ctx) -> dict:
        view = augmented_view(cfg.student.resolution, cfg.aug)
        return {"student": view} if cfg.method.mode == "supervised" else {"query": view, "key": view}

    @classmethod
    def prepare(cls, cfg: DistillConfig, ctx) -> Preparation | None:
        if cfg.method.mode != "supervised":
            return None
        labels = ctx.source.labels
        if labels is None:
            raise ConfigError(f"method.mode=supervised needs labelled training images (class sub-folders in {cfg.data.train}); use mode=label_free")
        # the classifiers' class ids are data.train's: the evaluation reads data.val in them, matched by name (eval/classes.py)
        sampler = ClassPairBatchSampler(labels, cfg.data.batch_size, seed=cfg.trainer.seed)
        return Preparation(tensors={"classes": torch.tensor(max(labels) + 1)}, batch_sampler=sampler)

    @classmethod
    def deviations(cls, cfg: DistillConfig) -> list[str]:
        """The method's settings, and in supervised mode the view and optimiser (``CIFAR_RECIPE``)."""
        return super().deviations(cfg) + (supervised_recipe_deviations(cfg) if cfg.method.mode == "supervised" else [])

    @classmethod
    def classifier_prefix(cls, position: int, state: dict) -> str:
        """The state-dict prefix of member ``position``'s classifier (``<prefix>weight``, ``<prefix>bias``)."""
        raise NotImplementedError

    @classmethod
    def classifiers_from_checkpoint(cls, cfg: DistillConfig, state: dict) -> dict[str, nn.Module]:
        if cfg.method.mode != "supervised":
            return {}
        rebuilt = {}
        for i, member in enumerate(cls.student_members(cfg)):
            prefix = cls.classifier_prefix(i, state)
            weight, bias = state[f"{prefix}weight"], state[f"{prefix}bias"]
            classifier = nn.Linear(weight.shape[1], weight.shape[0])
            classifier.load_state_dict({"weight": weight, "bias": bias})
            rebuilt[member] = classifier.eval()
        return rebuilt

    def mutual_loss(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """α VCL + β ICL + γ soft VCL + λ soft ICL."""
        m = self.cfg.method
        weights = {"vcl": m.effective("vcl_weight"), "icl": m.effective("icl_weight"), "soft_vcl": m.soft_vcl_weight, "soft_icl": m.soft_icl_weight}
        return sum(weights[name] * value for name, value in terms.items())


class MCL(CohortMethod):
    name = "mcl"
    config_class = MCLConfig
    description = "MCL: a cohort of students teaching each other (vanilla + interactive contrast and their soft KL); no teacher"

    def __init__(self, cfg, students, signals, **context) -> None:
        super().__init__(cfg, students, signals, **context)
        m = cfg.method
        self.mode = m.mode
        width = m.out_dim
        members = list(self.students().values())
        heads = [self._head(s.dim) for s in members]
        self.queries = nn.ModuleList(Query(s, h) for s, h in zip(members, heads))
        if m.mode == "label_free":
            self.key_encoders = nn.ModuleList(momentum_copy(q) for q in self.queries)
            self.queue = key_queue(m, width, self.dataset_size, cfg.trainer.seed, members=len(members))
        else:
            classes = int(self.prepared["classes"])
            self.classifiers = nn.ModuleList(nn.Linear(s.dim, classes) for s in members)

    def _head(self, dim: int) -> nn.Module:
        m = self.cfg.method
        if m.effective("head") == "linear":
            return mlp([dim, m.out_dim])
        hidden = m.head_hidden or (dim if m.mode == "label_free" else m.out_dim)
        return mlp([dim, hidden, m.out_dim], bn="none")

    def member_classifiers(self) -> dict[str, nn.Module]:
        if self.mode != "supervised":
            return {}
        return dict(zip(self.member_names, self.classifiers))

    @classmethod
    def classifier_prefix(cls, position: int, state: dict) -> str:
        return f"classifiers.{position}."

    # ----- training ------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        terms, extra = self.label_free_terms(batch) if self.mode == "label_free" else self.supervised_terms(batch)
        loss = self.mutual_loss(terms) + sum(extra.values())
        return self.log_loss(loss, **terms, **extra)

    def label_free_terms(self, batch: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        m, views, ids = self.cfg.method, batch["views"], batch["index"]
        for key_encoder, query in zip(self.key_encoders, self.queries):
            if self.opens_optimiser_step:  # once per optimiser step, with gradient accumulation too
                momentum_update(key_encoder, query, m.momentum)
        queries = [query(views["query"]) for query in self.queries]
        with torch.no_grad():
            keys = [grouped_forward(key_encoder, views["key"], m.bn_groups) for key_encoder in self.key_encoders]
        own = excluded_keys(m, self.queue, ids)  # the queues share their ids, so one mask serves every pair
        tau = m.effective("temperature")
        logits = [[queue_logits(q, k, self.queue.member_keys(b), tau, own) for b, k in enumerate(keys)] for q in queries]
        terms = mutual_contrastive_terms(logits, lambda block, within: positive_first_ce(block), m.kl_temperature)
        self.queue.stage(torch.stack(keys, dim=1), ids)
        return terms, {}

    def supervised_terms(self, batch: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        m, images, labels = self.cfg.method, batch["views"]["student"], batch["label"]
        features = [query.student(images) for query in self.queries]
        embeddings = [F.normalize(query.head(h), dim=1) for query, h in zip(self.queries, features)]
        class_logits = [classifier(h) for classifier, h in zip(self.classifiers, features)]
        tau = m.effective("temperature")
        with torch.autocast(device_type=images.device.type, enabled=False):  # similarities and log-sum-exp in float32
            logits = [[(a.float() @ b.float().T) / tau for b in embeddings] for a in embeddings]
        within, across, diagonal = class_positive_masks(labels, m.icl_include_self_pair)

        def contrastive(block: torch.Tensor, same_network: bool) -> torch.Tensor:
            if same_network:
                return logits_nce(block, within, exclude=diagonal).loss
            return logits_nce(block, across, exclude=None if m.icl_include_self_pair else diagonal).loss

        terms = mutual_contrastive_terms(logits, contrastive, m.kl_temperature)
        extra = {"ce": sum(F.cross_entropy(z.float(), labels) for z in class_logits)}
        if m.logit_kd_weight > 0:
            mean = torch.stack([z.detach().float() for z in class_logits]).mean(0)
            extra["logit_kd"] = m.logit_kd_weight * sum(distill_kl(z, mean, m.kl_temperature) for z in class_logits)
        return terms, extra
