"""The teacher's BatchNorm mode for methods whose official code runs the teacher online in training mode (BINGO,
DisCo; METHODS 3.10 pitfall 1): ``eval`` (ssdistill default) uses running statistics, so a key depends on its image
only; ``train`` takes the statistics of ``teacher_bn_groups`` random sub-batches (a single-process stand-in for the
official shuffle-BN inside each GPU's 32 images), as the official code does. ``train`` needs the online teacher:
cached outputs were computed in eval mode.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ssdistill.config import MethodConfig, official


class TeacherBNConfig(MethodConfig):
    teacher_bn: Literal["eval", "train"] = Field(
        "eval",
        description="eval: running BatchNorm statistics; train: batch statistics as the official code (needs the online teacher)",
        json_schema_extra=official("train"),
    )
    teacher_bn_groups: int = Field(
        4, gt=0, description="teacher_bn=train: random sub-batches the statistics are taken over (shuffle-BN stand-in)"
    )

    def teacher_online(self) -> bool:
        """Whether this config runs the teacher on the batch's own views (a subclass decides from its fields)."""
        raise NotImplementedError

    def online_setting(self) -> str:
        """The setting that makes the teacher run online, for the error message."""
        raise NotImplementedError

    @model_validator(mode="after")
    def _batch_statistics_need_an_online_teacher(self) -> "TeacherBNConfig":
        if self.teacher_bn == "train" and not self.teacher_online():
            raise ValueError(f"method.teacher_bn=train needs {self.online_setting()} (cached teacher outputs were computed in eval mode)")
        return self

    def inactive(self) -> set[str]:
        return super().inactive() | ({"teacher_bn_groups"} if self.teacher_bn == "eval" else set())


def teacher_signal_for(cfg: TeacherBNConfig, signal):
    """The online signal with batch statistics when ``teacher_bn=train``, else the signal as given."""
    return signal.with_batch_statistics(cfg.teacher_bn_groups) if cfg.teacher_bn == "train" else signal
