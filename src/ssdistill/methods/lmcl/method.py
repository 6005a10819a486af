"""``LMCL``, the method module (the registry's ``lmcl``): the members' branches and heads, the real step, the meta
step and the stage heads' evaluation (the package docstring describes the method)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from ssdistill.data.views import original_view
from ssdistill.engine.meta import MetaStepStats, meta_step
from ssdistill.errors import ConfigError
from ssdistill.eval.classes import class_names
from ssdistill.eval.features import extract_features
from ssdistill.eval.knn import knn_accuracy
from ssdistill.eval.suite import classifier_accuracy
from ssdistill.losses.layerwise import aggregate_logits, aggregation_loss, layerwise_mutual_terms, pair_weights
from ssdistill.methods.lmcl.cohort import Cohort, Features, StageHead, final_instance_nce, nodes, stage_cross_entropy
from ssdistill.methods.lmcl.config import LMCLConfig
from ssdistill.methods.mcl import CohortMethod
from ssdistill.models.heads import mlp
from ssdistill.models.stages import auxiliary_branch, student_stages


class LMCL(CohortMethod):
    name = "lmcl"
    config_class = LMCLConfig
    description = "L-MCL: MCL between every stage of a cohort (auxiliary branches), with meta-learned pair weights; no teacher"

    def __init__(self, cfg, students, signals, **context) -> None:
        super().__init__(cfg, students, signals, **context)
        m, o = cfg.method, cfg.optim
        if m.meta and o.optimizer != "sgd" and m.meta_lr is None:
            raise ConfigError(
                f"method.meta_lr is needed with optim.optimizer={o.optimizer}: the meta step's virtual steps are SGD, and "
                f"optim.lr={o.lr:g} is an {o.optimizer} step size; set method.meta_lr (the official SGD peak is 0.1) or method.meta=false"
            )
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
            # official: SGD, Nesterov, the cohort's momentum, weight decay and learning rate (set each meta step)
            self.weighting_optimizer = torch.optim.SGD(
                self.weighting.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.momentum > 0, weight_decay=self.meta_weight_decay()
            )
            # stepped by the meta step only: never in the run's optimiser, never reduced by DDP in the real step
            self._ddp_params_and_buffers_to_ignore = [f"weighting.{name}" for name, _ in self.weighting.named_parameters()]
        self._meta_batch: dict | None = None
        self._meta_stats: MetaStepStats | None = None
        self._weighting_state: dict | None = None

    def meta_weight_decay(self) -> float:
        m = self.cfg.method
        return self.cfg.optim.weight_decay if m.meta_weight_decay is None else m.meta_weight_decay

    def on_fit_start(self) -> None:
        """The stage plans again, from the modules as Lightning left them (``sync_batchnorm`` replaces BatchNorm
        modules, which the plans of ``__init__`` reference); the weighting optimiser's state of a resumed run, now that
        its parameters are on the run's device."""
        super().on_fit_start()
        self.plans = [student_stages(student) for student in self.students().values()]
        if self._weighting_state is not None:
            self.weighting_optimizer.load_state_dict(self._weighting_state)  # its buffers follow the parameters' device
            self._weighting_state = None

    def cohort(self) -> Cohort:
        return Cohort(list(self.students().values()), self.plans, self.branches, self.embeds, self.classifiers)

    def optimised_parameters(self):
        excluded = {id(p) for p in self.weighting.parameters()} if self.weighting is not None else set()
        return (p for p in self.parameters() if id(p) not in excluded)

    # ----- declarations (the rest: CohortMethod) ----------------------------------------------------
    def member_classifiers(self) -> dict[str, nn.Module]:
        """Each member's final-stage classifier (its own head; the stage heads are in ``extra_evaluation``)."""
        return {} if self.classifiers is None else {member: heads[-1] for member, heads in zip(self.member_names, self.classifiers)}

    @classmethod
    def classifier_prefix(cls, position: int, state: dict) -> str:
        """Member ``position``'s last-stage classifier (``classifiers.<member>.<stage>.``)."""
        stages = [int(key.split(".")[2]) for key in state if key.startswith(f"classifiers.{position}.") and key.endswith(".weight")]
        return f"classifiers.{position}.{max(stages)}."

    # ----- the losses ----------------------------------------------------------------------------
    def pair_weights(self, features: Features) -> dict | None:
        """ω per ordered pair of (member, stage) nodes of different members from the weighting network; None (ω ≡ 1)
        without the meta step."""
        if self.weighting is None:
            return None
        return pair_weights({(i, k): self.weighting[i][k](f) for (i, k), f in nodes(features).items()})

    def mutual(
        self, embeddings: Features, weights: dict | None, labels: torch.Tensor | None = None, keys: Features | None = None
    ) -> dict[str, torch.Tensor]:
        m = self.cfg.method
        return layerwise_mutual_terms(
            nodes(embeddings),
            weights,
            temperature=m.effective("temperature"),
            kl_temperature=m.kl_temperature,
            labels=labels,
            keys=None if keys is None else nodes(keys),
            include_self_pair=m.icl_include_self_pair,
            pair_count=m.pair_count,
        )

    def label_free_terms(self, cohort: nn.Module, views: dict, live_weights: bool) -> tuple[dict[str, torch.Tensor], dict | None]:
        """The mutual terms of both directions (each view's embeddings against the other's as keys), averaged, and the
        query view's pair weights (for the log)."""
        (f_q, e_q, _), (f_k, e_k, _) = cohort(views["query"]), cohort(views["key"])
        w_q, w_k = self._weights(f_q, live_weights), self._weights(f_k, live_weights)
        one, two = self.mutual(e_q, w_q, keys=e_k), self.mutual(e_k, w_k, keys=e_q)
        return {name: (one[name] + two[name]) / 2 for name in one}, w_q

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
            terms, weights = self.label_free_terms(self.cohort(), batch["views"], live_weights=False)
            extra: dict[str, torch.Tensor] = {}
        else:
            images, labels = batch["views"]["student"], batch["label"]
            features, embeddings, logits = self.cohort()(images)
            weights = self._weights(features, live=False)
            terms = self.mutual(embeddings, weights, labels=labels)
            extra = self.classification(features, logits, labels)
        loss = self.mutual_loss(terms) + sum(extra.values())
        if weights is not None:
            omega = torch.stack(list(weights.values()))
            extra = {**extra, "omega_mean": omega.mean(), "omega_std": omega.std()}
        return self.log_loss(loss, **terms, **extra)

    def classification(self, features: Features, logits: Features, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every stage's cross-entropy; with the aggregator its cross-entropy and the final heads' KD (official)."""
        m = self.cfg.method
        if self.aggregators is None:
            return {"ce": stage_cross_entropy(logits, labels)}
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
                return self.mutual_loss(terms)

            def outer(params, buffers):
                (_, e_q, _), (_, e_k, _) = run(params, buffers, views["query"]), run(params, buffers, views["key"])
                return sum(final_instance_nce(q[-1], k[-1], m.effective("temperature")) for q, k in zip(e_q, e_k))
        else:
            images, labels = batch["views"]["student"], batch["label"]

            def inner(params, buffers):
                features, embeddings, _ = run(params, buffers, images)
                return self.mutual_loss(self.mutual(embeddings, self.pair_weights(features), labels=labels))

            def outer(params, buffers):
                _, _, logits = run(params, buffers, images)
                return stage_cross_entropy(logits, labels)

        return meta_step(
            cohort,
            self.weighting,
            self.weighting_optimizer,
            inner,
            outer,
            m.meta_steps,
            lr,
            o.momentum,
            self.meta_weight_decay(),
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
            self._weighting_state = checkpoint["lmcl_weighting_optimizer"]  # loaded in on_fit_start, on the run's device

    # ----- evaluation of the stage heads ---------------------------------------------------------
    def extra_evaluation(self, ctx, initial=None) -> dict[str, object]:
        """``stage_heads``: per member, per auxiliary branch, the weighted k-NN (k, τ of ``eval``) of its pooled
        output, with the members' k-NN memory (``data.knn_train``, else the training images) and ``data.val`` as
        queries, and (supervised, when data.val has the training images' classes) its classifier's top-1. Training
        aids only: the exported student is each member's own network."""
        cfg = self.cfg
        if cfg.data.val is None:
            return {"stage_heads": {"skipped": "no data.val"}}
        val = ctx.open(cfg.data.val)
        memory = ctx.open(cfg.data.knn_train) if cfg.data.knn_train else ctx.source
        if memory.labels is None or val.labels is None or class_names(val) != class_names(memory):
            return {"stage_heads": {"skipped": f"data.val ({cfg.data.val}) does not have the k-NN memory's class folders"}}
        scored = self.classifiers is not None and ctx.source.labels is not None and class_names(ctx.source) == class_names(val)
        view = original_view(cfg.student.resolution)
        args = (cfg.data.eval_batch_size, cfg.data.num_workers, ctx.device)
        memory_labels, val_labels = torch.tensor(memory.labels), torch.tensor(val.labels)
        rows: dict[str, Any] = {}
        for i, member in enumerate(self.member_names):
            for k, branch in enumerate(self.branches[i]):
                head = StageHead(self.plans[i], branch)
                known = extract_features(head, memory, view, *args, f"{member} stage {k + 1} (memory)")
                queries = extract_features(head, val, view, *args, f"{member} stage {k + 1} (val)")
                row: dict[str, Any] = {
                    "branch": branch.kind,
                    "knn": knn_accuracy(known, memory_labels, queries, val_labels, cfg.eval.knn_k, cfg.eval.knn_t),
                }
                if scored:
                    with torch.no_grad():
                        row["classifier"] = classifier_accuracy(self.classifiers[i][k], queries, val_labels)
                rows[f"{member}/stage{k + 1}"] = row
        return {"stage_heads": rows}
