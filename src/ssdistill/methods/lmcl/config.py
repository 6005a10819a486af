"""``LMCLConfig``, L-MCL's settings (docs/methods/mcl.md, the L-MCL section): the official CIFAR values for ``mode: supervised``;
``mode: label_free`` is ours, so its record lists every field set away from our defaults."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ssdistill.config import SELECTS, MethodConfig, StudentConfig, official

DEFAULTS = {
    "label_free": {"temperature": 0.2, "vcl_weight": 1.0, "icl_weight": 1.0},
    "supervised": {"temperature": 0.1, "vcl_weight": 0.1, "icl_weight": 0.1},
}
SUPERVISED_ONLY = {"aggregator", "logit_kd_weight", "icl_include_self_pair"}
META_ONLY = {"meta_every", "meta_steps", "meta_outer_step", "meta_lr", "meta_weight_decay", "weighting_dim"}


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
    meta_weight_decay: float | None = Field(
        None,
        ge=0,
        description="weight decay (L2, as SGD's) of the virtual steps and the weighting network; default: optim.weight_decay "
        "(official, where the run is SGD: set it for adamw, whose decoupled decay is not SGD's)",
    )
    weighting_dim: int = Field(128, gt=0, description="width of the weighting network's projections", json_schema_extra=official(128))

    @model_validator(mode="after")
    def _branch_width_for_light(self) -> LMCLConfig:
        if self.branch_width is not None and self.branch != "light":
            raise ValueError("method.branch_width sets the conv width of a light branch; with branch=copy remove it or set method.branch=light")
        return self

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
            default = DEFAULTS[self.mode].get(name, field.default)
            if name in ("name", "preset") or selects or name in inactive or self.effective(name) == default:
                continue
            notes.append(f"{name}: {getattr(self, name)} (ssdistill default: {'unset' if default is None else default})")
        return notes

    def architectures(self, student: StudentConfig) -> list[str]:
        return list(self.cohort) if self.cohort is not None else [student.arch, student.arch]
