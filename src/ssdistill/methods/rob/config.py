"""RoB's settings (``method.name: rob``): the base, the target, the crops and each base's own fields."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ssdistill.config import MethodConfig


class RoBConfig(MethodConfig):
    name: Literal["rob"] = "rob"
    base: Literal["dino", "regression", "msn"] = Field("dino", description="the joint-embedding method whose target branch the teacher replaces")
    target: Literal["logits", "projection", "head"] = Field(
        "projection",
        description="logits: the teacher's classifier logits; projection: n(teacher embedding) times K fixed unit columns; "
        "head: the teacher checkpoint's own SSL head (teacher_head)",
    )
    teacher_head: str | None = Field(None, description="target=head: checkpoint holding the teacher's DINO / MSN / BYOL head")
    teacher_head_prefix: str = Field(
        "teacher.head.",
        description="target=head: key prefix of the head's MLP and last layer (DINO full checkpoints: teacher.head.; MSN: target_encoder.module.fc.)",
    )
    teacher_prototypes: str | None = Field(None, description="target=head: key of the head's prototypes (MSN: prototypes) instead of a last layer")
    projection_init: Literal["random", "kmeans", "identity"] = Field(
        "kmeans",
        description="the K columns of the projection target: seeded random, k-means centroids of the cached teacher features, "
        "or identity (the normalised embedding itself; regression base only)",
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
        "own",
        description="dino, msn: the student's last layer / prototypes are its own, or the target's columns (the projection "
        "columns or the teacher head's last layer / prototypes), frozen",
    )
    head_hidden: int = Field(1024, gt=0, description="hidden width of the student's projection head")
    bottleneck: int = Field(256, gt=0, description="dino, msn: width before the last layer / the prototypes")
    head: Literal["byol", "simsiam"] = Field("byol", description="regression: predictor shape (byol: MLP with BN; simsiam: bottleneck)")
    msn_temperature: float = Field(0.1, gt=0, description="msn: τ of the prototype probabilities")
    sharpen_temperature: float = Field(0.25, gt=0, description="msn: target sharpening T")
    memax_weight: float = Field(1.0, ge=0, description="msn: weight of ME-MAX (0: off)")
    patch_drop: float = Field(
        0.15,
        ge=0,
        lt=1,
        description="msn, ViT students: share of patch tokens dropped from the global (anchor) crops, as MSN masks its "
        "anchor view (no effect on students without patch tokens)",
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
    def _consistent(self) -> RoBConfig:
        if self.target == "projection" and self.projection_init == "identity" and self.base != "regression":
            raise ValueError("projection_init=identity is for base=regression only (dino and msn need K prototypes)")
        if self.student_prototypes == "teacher_frozen" and self.target == "logits":
            raise ValueError("student_prototypes=teacher_frozen reuses the target's columns: set target=projection or head")
        if (self.target == "head") != (self.teacher_head is not None):
            raise ValueError("target=head reads the head from method.teacher_head=CHECKPOINT, and only target=head does")
        return self
