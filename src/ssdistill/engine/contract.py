"""What a method declares to the engine, as data: the teacher signals it needs (``TeacherNeed``) and the layout of
the batches its dataset yields (``BatchLayout``); and what the engine hands back (``Fulfilment``).

A need names a teacher (a key of ``cfg.teachers``; None: the primary teacher), the view the teacher sees and the
output tap. The engine's teacher provider (``engine/provider.py``) fulfils every need of a method, from the cache or
online, in one call that returns a ``Fulfilment``; the method receives its ``signals: {need name: TeacherSignal}``
and never learns how.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from ssdistill.config import is_tap

if TYPE_CHECKING:
    from ssdistill.cache.signals import TeacherSignal

TeacherView = Literal["original", "augmented", "bank"]


@dataclass(frozen=True)
class TeacherNeed:
    """``original``: the teacher's output on the deterministic original view of each image, a function of the image
    alone (read from the cache when ``teacher.precompute``, else computed in the step on a view the dataset adds to
    the batch); ``augmented``: the teacher runs in the step on images the method passes (its own augmented views);
    ``bank``: outputs on ``repeats`` fixed augmented views per image from the cache, looked up by ``batch["bank_row"]``
    (an approximation, recorded). A multi-crop method declares its crops as views of its batch (``BatchLayout``, one
    resolution per view) and an ``augmented`` need for the teacher, which it runs on the crops it chooses (for example
    the global ones). ``crop_scale``: the area range of a bank's crops (default: ``aug``'s). ``tap``: None = the teacher's configured ``output``; otherwise ``pooled``, ``logits`` or
    ``module:<name>``, a named head or block of the teacher; ``subset``: a data spec whose images the signal covers
    instead of ``data.train`` (original view only)."""

    view: TeacherView = "original"
    teacher: str | None = None
    tap: str | None = None  # pooled, logits or module:<name> (config.is_tap)
    repeats: int | None = None
    subset: str | None = None
    crop_scale: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if (self.view == "bank") != (self.repeats is not None):
            raise ValueError("a bank need gives its repeats, and only a bank need does")
        if self.crop_scale is not None and self.view != "bank":
            raise ValueError("only a bank need has its own crop scale")
        if self.subset is not None and self.view != "original":
            raise ValueError("a data subset is only possible for the original view")
        if self.tap is not None and not is_tap(self.tap):
            raise ValueError(f"a need's tap is pooled, logits or module:<name>, got {self.tap!r}")


@dataclass(frozen=True)
class BatchLayout:
    """What one training item holds: ``views`` {name: resolution} of [3, r, r] tensors in [0, 1], and the integer
    ``keys`` besides ``index`` and ``label`` (for example ``neighbour``, ``bank_row``)."""

    views: dict[str, int]
    keys: tuple[str, ...] = ()
    key_ranges: dict[str, int] = field(default_factory=dict)  # exclusive upper bound of each key's values

    def example(self, batch_size: int, dataset_size: int, generator: torch.Generator | None = None) -> dict:
        """A random batch of this layout (images uniform in [0, 1]), as a DataLoader would collate it."""
        g = generator or torch.Generator().manual_seed(0)
        index = torch.randperm(dataset_size, generator=g)[:batch_size]
        batch = {
            "index": index,
            "label": torch.full((batch_size,), -1, dtype=torch.long),
            "views": {name: torch.rand(batch_size, 3, r, r, generator=g) for name, r in self.views.items()},
        }
        for key in self.keys:
            batch[key] = torch.randint(self.key_ranges.get(key, dataset_size), (batch_size,), generator=g)
        return batch


@dataclass
class Preparation:
    """What a method's ``prepare`` hook made before training: its own training ``dataset`` (None: the engine's
    default) and ``tensors`` it computed from the cache (teacher statistics, a constant centre, k-means heads), handed
    to the module as ``prepared`` (moved to the training device; not in the checkpoint: they are recomputed, from the
    same cache, on resume); and a ``batch_sampler`` when its batches must be composed (two images per class)."""

    dataset: Any = None
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    batch_sampler: Any = None  # a sampler of whole batches of indices (None: shuffled batches of data.batch_size); it
    # shards itself across DDP processes and has ``set_epoch`` (data/sampling.py)


@dataclass(frozen=True)
class Bank:
    """The augmentation bank a signal reads: each bank row's crop parameters ``params`` [N * R, P] (``data.replay``) and
    ``repeats`` R, the crops per image (bank row ``i * R + r`` is crop r of image i)."""

    params: np.ndarray
    repeats: int


@dataclass(frozen=True)
class Fulfilment:
    """What ``TeacherProvider.fulfil(needs)`` made of a method's needs: one ``signals`` entry per need, by need name;
    ``records``, how each was fulfilled (results.json ``signals``); ``approximations``, how a signal only approximates the
    method (``teacher_bank(R)``); ``bank``, the augmentation bank a signal reads (its crops are what the student replays),
    None without one; ``seconds`` spent computing or reading precomputed signals (None: all of them online)."""

    signals: dict[str, TeacherSignal] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    approximations: tuple[str, ...] = ()
    bank: Bank | None = None
    seconds: float | None = None

    def batch_views(self) -> dict[str, Callable]:
        """The views the dataset must render for online signals of the original view, by their batch view name."""
        return {signal.batch_view: signal.teacher.original_view() for signal in self.signals.values() if signal.batch_view is not None}
