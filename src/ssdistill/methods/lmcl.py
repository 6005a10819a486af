"""L-MCL, Layer-wise Mutual Contrastive Learning (docs/methods/mcl.md, the TPAMI 2023 extension of MCL; official code
github.com/winycg/L-MCL, CIFAR, supervised): MCL's four terms exchanged between every stage of every member.

Each member gets an auxiliary branch on every stage but its last (``branch: copy``: a freshly initialised copy of its
remaining stages and head, as the official code builds them; ``light``: a small conv head, for students where a copy
is not meaningful), so member i has S_i stage features f_ik, the last its own pooled feature. Per (member, stage):
an embedding head (Linear-ReLU-Linear to 128, L2-normalised), a classifier (supervised) and a projection of the
weighting network. The loss (``losses/layerwise.py``) contrasts every stage of a member with every stage of every
other member, each anchor weighted by ω = sigmoid(cos(P f, P f)); supervised runs add every stage's cross-entropy,
the aggregator (softmax over the stages, from their concatenated features, mixing the stage logits) with its
cross-entropy, and the final head's KD towards every member's aggregated logits.

The weighting network is trained only by the meta step (``engine/meta.py``): every ``meta_every`` optimiser steps,
right after the real step and on its batch, ``meta_steps`` virtual SGD steps of the cohort on the weighted mutual loss
(ω live), one more on the outer loss (``meta_outer_step``), and the outer loss at the virtual parameters
differentiated into the weighting network; the cohort itself is read, never written. Outer loss: supervised, the
cross-entropy of every stage (official); label-free (ours, the official code has no label-free mode), each member's
unweighted final-stage InfoNCE between the two views, the quantity the k-NN evaluation rewards, which the weighted
inner loss does not contain as such. ``meta: false`` fixes ω ≡ 1 (the paper's ablation).

``mode: label_free`` (ours): two augmented views; the keys of a view are the other view's embeddings of the same
(member, stage), in-batch (every other image of the batch a negative), both directions averaged; no key encoder, no
queue, no classifier, no aggregator.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from ssdistill.config import SELECTS, DistillConfig, MethodConfig, StudentConfig, official
from ssdistill.data.views import original_view
from ssdistill.engine.meta import MetaStepStats, meta_step
from ssdistill.engine.module import DistillMethod
from ssdistill.eval.classes import class_names
from ssdistill.eval.features import extract_features
from ssdistill.eval.knn import knn_accuracy
from ssdistill.eval.suite import classifier_accuracy
from ssdistill.losses.infonce import logits_nce
from ssdistill.losses.layerwise import aggregate_logits, aggregation_loss, layerwise_mutual_terms, pair_weights
from ssdistill.methods.mcl import class_pair_preparation, cohort_members, cohort_views, supervised_view_deviations
from ssdistill.models.heads import mlp
from ssdistill.models.stages import StagePlan, auxiliary_branch, stage_maps, student_stages

# ssdistill's defaults where a field is left unset (None); supervised = the official CIFAR values
DEFAULTS = {
    "label_free": {"temperature": 0.2, "vcl_weight": 1.0, "icl_weight": 1.0},
    "supervised": {"temperature": 0.1, "vcl_weight": 0.1, "icl_weight": 0.1},
}
SUPERVISED_ONLY = {"aggregator", "logit_kd_weight", "icl_include_self_pair"}
META_ONLY = {"meta_every", "meta_steps", "meta_outer_step", "meta_lr", "weighting_dim"}


class LMCLConfig(MethodConfig):
    name: Literal["lmcl"] = "lmcl"
    mode: Literal["label_free", "supervised"] = Field(
        "label_free",
        description="supervised: the official setting (cross-entropy, class positives, two images per class, needs class "
        "sub-folders); label_free: ours, two views, instance positives",
        json_schema_extra=SELECTS,
    )
    cohort: list[str] | None = Field(
        None, description="timm architectures of the members, M >= 2 (heterogeneous allowed); default: two of student.arch", json_schema_extra=SELECTS
    )
    branch: Literal["copy", "light"] = Field(
        "copy",
        description="auxiliary branch on each stage but the last: copy = fresh copy of the remaining stages and head (official); "
        "light = conv3x3-BN-ReLU-pool-Linear",
        json_schema_extra=official("copy"),
    )
    branch_width: int | None = Field(None, gt=0, description="branch: light, its conv width (default: the stage's width)")
    out_dim: int = Field(128, gt=0, description="embedding width of every (member, stage) head", json_schema_extra=official(128))
    temperature: float | None = Field(None, gt=0, description="contrastive temperature τ (default 0.1 supervised, 0.2 label-free)")
    kl_temperature: float = Field(3.0, gt=0, description="temperature T of the soft terms and of the logit KD", json_schema_extra=official(3.0))
    vcl_weight: float | None = Field(None, ge=0, description="α, vanilla contrastive (default 0.1 supervised, 1 label-free)")
    icl_weight: float | None = Field(None, ge=0, description="β, interactive contrastive (default 0.1 supervised, 1 label-free)")
    soft_vcl_weight: float = Field(1.0, ge=0, description="γ, soft vanilla", json_schema_extra=official(1.0))
    soft_icl_weight: float = Field(1.0, ge=0, description="λ, soft interactive", json_schema_extra=official(1.0))
    pair_count: Literal["official", "unordered"] = Field(
        "official",
        description="official: every ordered pair of stages of different members (each unordered pair twice, as the official "
        "loop); unordered: once (for M = 2 and one stage, exactly MCL's terms)",
        json_schema_extra=official("official"),
    )
    icl_include_self_pair: bool = Field(
        False,
        description="supervised: the same image in the other member counts as a positive of ICL (official: left out)",
        json_schema_extra=official(False),
    )
    aggregator: bool = Field(
        True,
        description="supervised: the attention aggregator over each member's stage logits, its cross-entropy and the final "
        "heads' KD towards it (official); off: stage cross-entropy only",
        json_schema_extra=official(True),
    )
    logit_kd_weight: float = Field(
        1.0, ge=0, description="supervised: weight of KL_T(final logits ‖ sg aggregated logits)", json_schema_extra=official(1.0)
    )
    meta: bool = Field(
        True,
        description="meta-learn the pair weights ω (official); off: ω ≡ 1, the ablation, no weighting network",
        json_schema_extra=official(True),
    )
    meta_every: int = Field(50, ge=1, description="a meta step every this many optimiser steps", json_schema_extra=official(50))
    meta_steps: int = Field(2, ge=1, description="virtual SGD steps on the weighted mutual loss per meta step", json_schema_extra=official(2))
    meta_outer_step: bool = Field(
        True, description="one more virtual step on the outer loss before it is evaluated (official, from L2T-ww)", json_schema_extra=official(True)
    )
    meta_lr: float | None = Field(
        None,
        gt=0,
        description="peak learning rate of the virtual SGD steps and of the weighting network, following the run's schedule; "
        "default: optim.lr (official, where the run is SGD: set it for adam/adamw, whose step sizes are not SGD's)",
    )
    weighting_dim: int = Field(128, gt=0, description="width of the weighting network's projections", json_schema_extra=official(128))

    @field_validator("cohort")
    @classmethod
    def _a_cohort(cls, cohort: list[str] | None) -> list[str] | None:
        if cohort is not None and len(cohort) < 2:
            raise ValueError(f"method.cohort lists M >= 2 timm architectures, got {cohort}")
        return cohort

    @classmethod
    def official_values(cls, data: dict[str, Any] | None = None) -> dict[str, Any]:
        mode = (data or {}).get("mode") or cls.model_fields["mode"].default
        if mode != "supervised":
            return {}  # the official code is supervised only
        return {**super().official_values(data), **DEFAULTS["supervised"]}

    def inactive(self) -> set[str]:
        off = set() if self.mode == "supervised" else set(SUPERVISED_ONLY)
        off |= set() if self.meta else set(META_ONLY)
        off |= {"logit_kd_weight"} if not self.aggregator else set()
        return off | ({"branch_width"} if self.branch == "copy" else set())

    def effective(self, field: str) -> Any:
        value = getattr(self, field)
        return DEFAULTS[self.mode][field] if value is None and field in DEFAULTS[self.mode] else value

    def deviations(self) -> list[str]:
        """Supervised: every departure from the official code. Label-free (ours): that, then every field set away
        from ssdistill's default."""
        if self.mode == "supervised":
            return super().deviations()
        notes, inactive = ["mode: label_free (ours: the official code is supervised only)"], self.inactive()
        for name, field in type(self).model_fields.items():
            selects = isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("selects")
            if name in ("name", "preset") or selects or name in inactive or getattr(self, name) == field.default:
                continue
            notes.append(f"{name}: {getattr(self, name)} (ssdistill default: {DEFAULTS[self.mode].get(name, field.default)})")
        return notes

    def architectures(self, student: StudentConfig) -> list[str]:
        return list(self.cohort) if self.cohort is not None else [student.arch, student.arch]


Features = list[list[torch.Tensor]]  # [member][stage] -> [B, d]


class _Cohort(nn.Module):
    """What the virtual steps move, the official's target parameters: the members with their branches, the
    embedding heads and the stage classifiers (not the aggregators, not the weighting network). Built on demand
    around the method's own modules (no copies, never registered, so nothing is saved twice)."""

    def __init__(
        self, members: list[nn.Module], plans: list[StagePlan], branches: nn.ModuleList, embeds: nn.ModuleList, classifiers: nn.ModuleList | None
    ):
        super().__init__()
        self.members, self.branches, self.embeds, self.classifiers = nn.ModuleList(members), branches, embeds, classifiers
        self.plans = plans

    def forward(self, images: torch.Tensor) -> tuple[Features, Features, Features | None]:
        """(stage features, normalised embeddings, stage logits or None), each [member][stage], shallow -> deep."""
        features, embeddings, logits = [], [], []
        for i, plan in enumerate(self.plans):
            maps, final = stage_maps(plan, images)
            member = [branch(maps[branch.stage]) for branch in self.branches[i]] + [final]
            features.append(member)
            embeddings.append([F.normalize(head(f), dim=1) for head, f in zip(self.embeds[i], member)])
            if self.classifiers is not None:
                logits.append([classifier(f) for classifier, f in zip(self.classifiers[i], member)])
        return features, embeddings, logits if self.classifiers is not None else None


def _nodes(per_member: Features) -> dict[tuple[int, int], torch.Tensor]:
    return {(i, k): t for i, stages in enumerate(per_member) for k, t in enumerate(stages)}


class _StageHead(nn.Module):
    """Images -> the pooled output of one auxiliary branch (for the stage heads' evaluation)."""

    def __init__(self, plan: StagePlan, branch: nn.Module):
        super().__init__()
        self.branch, self.plan = branch, plan

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.branch(stage_maps(self.plan, images)[0][self.branch.stage])


class LMCL(DistillMethod):
    name = "lmcl"
    config_class = LMCLConfig
    description = "L-MCL: MCL between every stage of a cohort (auxiliary branches), with meta-learned pair weights; no teacher"

    def __init__(self, cfg, students, signals, **context) -> None:
        super().__init__(cfg, students, signals, **context)
        m = cfg.method
        members = list(self.students().values())
        self.plans = [student_stages(student) for student in members]
        self.branches = nn.ModuleList(
            nn.ModuleList(
                auxiliary_branch(plan, k, m.branch, *((m.branch_width, None) if m.branch == "light" else ())) for k in range(plan.num_stages - 1)
            )
            for plan in self.plans
        )
        dims = [[branch.out_dim for branch in branches] + [student.dim] for branches, student in zip(self.branches, members)]
        self.stage_dims = dims
        self.embeds = nn.ModuleList(nn.ModuleList(mlp([d, m.out_dim, m.out_dim], bn="none") for d in member) for member in dims)
        self.classifiers = self.aggregators = None
        if m.mode == "supervised":
            classes = int(self.prepared["classes"])
            self.classifiers = nn.ModuleList(nn.ModuleList(nn.Linear(d, classes) for d in member) for member in dims)
            if m.aggregator:  # official: Linear(Σ_k d_k -> d) - ReLU - Linear(d -> S), d = the member's width
                self.aggregators = nn.ModuleList(mlp([sum(member), member[-1], len(member)], bn="none") for member in dims)
        self.weighting = self.weighting_optimizer = None
        if m.meta:
            self.weighting = nn.ModuleList(nn.ModuleList(nn.Linear(d, m.weighting_dim) for d in member) for member in dims)
            o = cfg.optim  # official: SGD, Nesterov, the cohort's momentum, weight decay and learning rate (set each meta step)
            self.weighting_optimizer = torch.optim.SGD(
                self.weighting.parameters(), lr=o.lr, momentum=o.momentum, nesterov=True, weight_decay=o.weight_decay
            )
            # stepped by the meta step only: never in the run's optimiser, never reduced by DDP in the real step
            self._ddp_params_and_buffers_to_ignore = [f"weighting.{name}" for name, _ in self.weighting.named_parameters()]
        self._meta_batch: dict | None = None
        self._meta_stats: MetaStepStats | None = None

    def cohort(self) -> _Cohort:
        return _Cohort(list(self.students().values()), self.plans, self.branches, self.embeds, self.classifiers)

    def optimised_parameters(self):
        excluded = {id(p) for p in self.weighting.parameters()} if self.weighting is not None else set()
        return (p for p in self.parameters() if id(p) not in excluded)

    # ----- declarations --------------------------------------------------------------------------
    @classmethod
    def student_members(cls, cfg: DistillConfig) -> dict[str, StudentConfig]:
        return cohort_members(cfg.student, cfg.method.architectures(cfg.student))

    @classmethod
    def teacher_needs(cls, cfg: DistillConfig) -> dict:
        return {}

    @classmethod
    def train_views(cls, cfg: DistillConfig, ctx) -> dict:
        return cohort_views(cfg, supervised=cfg.method.mode == "supervised")

    @classmethod
    def prepare(cls, cfg: DistillConfig, ctx):
        return class_pair_preparation(cfg, ctx) if cfg.method.mode == "supervised" else None

    @classmethod
    def deviations(cls, cfg: DistillConfig) -> list[str]:
        return super().deviations(cfg) + (supervised_view_deviations(cfg) if cfg.method.mode == "supervised" else [])

    def member_classifiers(self) -> dict[str, nn.Module]:
        """Each member's final-stage classifier (its own head; the stage heads are in ``extra_evaluation``)."""
        return {} if self.classifiers is None else {member: heads[-1] for member, heads in zip(self.member_names, self.classifiers)}

    @classmethod
    def classifiers_from_checkpoint(cls, cfg: DistillConfig, state: dict) -> dict[str, nn.Module]:
        if cfg.method.mode != "supervised":
            return {}
        rebuilt = {}
        for i, member in enumerate(cls.student_members(cfg)):
            last = max(int(key.split(".")[2]) for key in state if key.startswith(f"classifiers.{i}.") and key.endswith(".weight"))
            weight, bias = state[f"classifiers.{i}.{last}.weight"], state[f"classifiers.{i}.{last}.bias"]
            classifier = nn.Linear(weight.shape[1], weight.shape[0])
            classifier.load_state_dict({"weight": weight, "bias": bias})
            rebuilt[member] = classifier.eval()
        return rebuilt

    # ----- the losses ----------------------------------------------------------------------------
    def pair_weights(self, features: Features) -> dict | None:
        """ω per ordered pair of (member, stage) nodes of different members from the weighting network; None (ω ≡ 1)
        without the meta step."""
        if self.weighting is None:
            return None
        return pair_weights({(i, k): self.weighting[i][k](f) for (i, k), f in _nodes(features).items()})

    def mutual(
        self, embeddings: Features, weights: dict | None, labels: torch.Tensor | None = None, keys: Features | None = None
    ) -> dict[str, torch.Tensor]:
        m = self.cfg.method
        return layerwise_mutual_terms(
            _nodes(embeddings),
            weights,
            temperature=m.effective("temperature"),
            kl_temperature=m.kl_temperature,
            labels=labels,
            keys=None if keys is None else _nodes(keys),
            include_self_pair=m.icl_include_self_pair,
            pair_count=m.pair_count,
        )

    def weighted_sum(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        m = self.cfg.method
        weights = {"vcl": m.effective("vcl_weight"), "icl": m.effective("icl_weight"), "soft_vcl": m.soft_vcl_weight, "soft_icl": m.soft_icl_weight}
        return sum(weights[name] * value for name, value in terms.items())

    def label_free_terms(self, cohort: nn.Module, views: dict, live_weights: bool) -> tuple[dict[str, torch.Tensor], tuple]:
        """The mutual terms of both directions (each view's embeddings against the other's as keys), averaged."""
        (f_q, e_q, _), (f_k, e_k, _) = cohort(views["query"]), cohort(views["key"])
        w_q, w_k = self._weights(f_q, live_weights), self._weights(f_k, live_weights)
        one, two = self.mutual(e_q, w_q, keys=e_k), self.mutual(e_k, w_k, keys=e_q)
        return {name: (one[name] + two[name]) / 2 for name in one}, (e_q, e_k, w_q)

    def _weights(self, features: Features, live: bool) -> dict | None:
        if live:
            return self.pair_weights(features)
        with torch.no_grad():
            return self.pair_weights([[f.detach() for f in member] for member in features])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        m = self.cfg.method
        if m.meta and self.opens_optimiser_step and self.global_step % m.meta_every == 0:
            self._meta_batch = batch  # the meta step runs right after this optimiser step, on this batch (official)
        if m.mode == "label_free":
            terms, (_, _, weights) = self.label_free_terms(self.cohort(), batch["views"], live_weights=False)
            extra: dict[str, torch.Tensor] = {}
        else:
            images, labels = batch["views"]["student"], batch["label"]
            features, embeddings, logits = self.cohort()(images)
            weights = self._weights(features, live=False)
            terms = self.mutual(embeddings, weights, labels=labels)
            extra = self.classification(features, logits, labels)
        loss = self.weighted_sum(terms) + sum(extra.values())
        if weights is not None:
            omega = torch.stack(list(weights.values()))
            extra = {**extra, "omega_mean": omega.mean(), "omega_std": omega.std()}
        return self.log_loss(loss, **terms, **extra)

    def classification(self, features: Features, logits: Features, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every stage's cross-entropy; with the aggregator its cross-entropy and the final heads' KD (official)."""
        m = self.cfg.method
        if self.aggregators is None:
            return {"ce": torch.stack([F.cross_entropy(z.float(), labels) for member in logits for z in member]).sum()}
        aggregated = {i: aggregate_logits(logits[i], self.aggregators[i](torch.cat(features[i], dim=1))) for i in range(len(logits))}
        terms = aggregation_loss(dict(enumerate(logits)), aggregated, labels, m.kl_temperature)
        terms["logit_kd"] = m.logit_kd_weight * terms["logit_kd"]
        return terms

    # ----- the meta step -------------------------------------------------------------------------
    def after_optimiser_step(self) -> None:
        super().after_optimiser_step()
        if self._meta_batch is not None:
            batch, self._meta_batch = self._meta_batch, None
            self._meta_stats = self.meta_update(batch)

    def meta_update(self, batch: dict) -> MetaStepStats:
        """One update of the weighting network (module docstring), at the run's current learning rate."""
        m, o = self.cfg.method, self.cfg.optim
        cohort = self.cohort()
        lr = self.trainer.optimizers[0].param_groups[0]["lr"] if self._trainer is not None else o.lr
        if m.meta_lr is not None:
            lr = m.meta_lr * lr / o.lr  # the run's schedule, at the meta step's own peak
        for group in self.weighting_optimizer.param_groups:
            group["lr"] = lr

        def run(params, buffers, *inputs):
            return functional_call(cohort, (params, buffers), inputs)

        if m.mode == "label_free":
            views = batch["views"]

            def inner(params, buffers):
                terms, _ = self.label_free_terms(lambda images: run(params, buffers, images), views, live_weights=True)
                return self.weighted_sum(terms)

            def outer(params, buffers):
                (_, e_q, _), (_, e_k, _) = run(params, buffers, views["query"]), run(params, buffers, views["key"])
                return sum(final_instance_nce(q[-1], k[-1], m.effective("temperature")) for q, k in zip(e_q, e_k))
        else:
            images, labels = batch["views"]["student"], batch["label"]

            def inner(params, buffers):
                features, embeddings, _ = run(params, buffers, images)
                return self.weighted_sum(self.mutual(embeddings, self.pair_weights(features), labels=labels))

            def outer(params, buffers):
                _, _, logits = run(params, buffers, images)
                return torch.stack([F.cross_entropy(z.float(), labels) for member in logits for z in member]).sum()

        return meta_step(
            cohort,
            self.weighting,
            self.weighting_optimizer,
            inner,
            outer,
            m.meta_steps,
            lr,
            o.momentum,
            o.weight_decay,
            outer_steps=int(m.meta_outer_step),
        )

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        """Every step: ``train/meta_step`` (1 where a meta step ran after it, else 0); ``meta_outer`` and
        ``meta_grad_norm`` are the latest meta step's (Lightning repeats a value on the steps that do not log one)."""
        super().on_train_batch_end(outputs, batch, batch_idx)
        if self.weighting is None:
            return
        self.log("train/meta_step", float(self._meta_stats is not None), on_step=True, on_epoch=False)
        if self._meta_stats is not None:
            stats, self._meta_stats = self._meta_stats, None
            self.log("train/meta_outer", stats.outer_loss, on_step=True, on_epoch=False)
            self.log("train/meta_grad_norm", stats.weighting_grad_norm, on_step=True, on_epoch=False)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.weighting_optimizer is not None:
            checkpoint["lmcl_weighting_optimizer"] = self.weighting_optimizer.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        if self.weighting_optimizer is not None and "lmcl_weighting_optimizer" in checkpoint:
            self.weighting_optimizer.load_state_dict(checkpoint["lmcl_weighting_optimizer"])

    # ----- evaluation of the stage heads ---------------------------------------------------------
    def extra_evaluation(self, ctx, initial=None) -> dict[str, object]:
        """``stage_heads``: per member, per auxiliary branch, the weighted k-NN (k, τ of ``eval``) of its pooled
        output, with the training images as memory and ``data.val`` as queries, and (supervised) its classifier's
        top-1. Training aids only: the exported student is each member's own network."""
        cfg = self.cfg
        if cfg.data.val is None or ctx.source.labels is None:
            return {"stage_heads": {"skipped": "needs labelled training images and data.val"}}
        val = ctx.open(cfg.data.val)
        if val.labels is None or class_names(val) != class_names(ctx.source):
            return {"stage_heads": {"skipped": f"data.val ({cfg.data.val}) does not have the training images' class folders"}}
        view = original_view(cfg.student.resolution)
        args = (cfg.data.eval_batch_size, cfg.data.num_workers, ctx.device)
        train_labels, val_labels = torch.tensor(ctx.source.labels), torch.tensor(val.labels)
        rows: dict[str, Any] = {}
        for i, member in enumerate(self.member_names):
            for k, branch in enumerate(self.branches[i]):
                head = _StageHead(self.plans[i], branch)
                memory = extract_features(head, ctx.source, view, *args, f"{member} stage {k + 1} (train)")
                queries = extract_features(head, val, view, *args, f"{member} stage {k + 1} (val)")
                row: dict[str, Any] = {
                    "branch": branch.kind,
                    "knn": knn_accuracy(memory, train_labels, queries, val_labels, cfg.eval.knn_k, cfg.eval.knn_t),
                }
                if self.classifiers is not None:
                    with torch.no_grad():
                        row["classifier"] = classifier_accuracy(self.classifiers[i][k], queries, val_labels)
                rows[f"{member}/stage{k + 1}"] = row
        return {"stage_heads": rows}


def final_instance_nce(queries: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
    """½ [InfoNCE(q → k) + InfoNCE(k → q)] in-batch, row n's positive the other view of image n, unweighted: the
    label-free outer loss of the meta step (one member's final stage)."""
    own = torch.eye(len(queries), device=queries.device)
    return (
        logits_nce(queries.float() @ keys.float().T / temperature, own).loss + logits_nce(keys.float() @ queries.float().T / temperature, own).loss
    ) / 2
