"""The teacher's BatchNorm mode for methods whose official code runs the teacher online in training mode (BINGO,
DisCo; docs/methods/bingo.md pitfall 1): ``eval`` (ssdistill default) uses running statistics, so a key depends on its image
only; ``train`` takes the statistics of ``teacher_bn_groups`` random sub-batches (a single-process stand-in for the
official shuffle-BN inside each GPU's 32 images), as the official code does. ``train`` needs the online teacher:
cached outputs were computed in eval mode, so where the teacher's outputs are cached the switch has no effect (it is
not listed as a deviation, and ``preset: official`` leaves it at eval; the cache itself is the recorded departure).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from ssdistill.config import MethodConfig, official


class TeacherBNConfig(MethodConfig):
    teacher_bn: Literal["eval", "train"] = Field(
        "eval",
        description="eval: running BatchNorm statistics; train: batch statistics as the official code (needs the online teacher)",
        json_schema_extra=official("train"),
    )
    teacher_bn_groups: int = Field(4, gt=0, description="teacher_bn=train: random sub-batches the statistics are taken over (shuffle-BN stand-in)")

    ONLINE: ClassVar[tuple[str, str]] = ("", "")  # (field, value) of a subclass that makes the teacher run online

    @classmethod
    def online_in(cls, data: dict[str, Any]) -> bool:
        field, value = cls.ONLINE
        return data.get(field, cls.model_fields[field].default) == value

    @classmethod
    def official_values(cls, data: dict[str, Any] | None = None) -> dict[str, Any]:
        values = super().official_values(data)
        if not cls.online_in(data or {}):
            values.pop("teacher_bn")  # no official counterpart for cached teacher outputs: they are eval-mode
        return values

    @model_validator(mode="after")
    def _batch_statistics_need_an_online_teacher(self) -> TeacherBNConfig:
        if self.teacher_bn == "train" and not self.online_in(self.model_dump()):
            field, value = self.ONLINE
            raise ValueError(f"method.teacher_bn=train needs method.{field}={value} (cached teacher outputs were computed in eval mode)")
        return self

    def inactive(self) -> set[str]:
        unused = super().inactive() | ({"teacher_bn_groups"} if self.teacher_bn == "eval" else set())
        return unused if self.online_in(self.model_dump()) else unused | {"teacher_bn"}


def teacher_signal_for(cfg: TeacherBNConfig, signal):
    """The online signal with batch statistics when ``teacher_bn=train``, else the signal as given."""
    return signal.with_batch_statistics(cfg.teacher_bn_groups) if cfg.teacher_bn == "train" else signal
