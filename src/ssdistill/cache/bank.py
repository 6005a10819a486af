"""Augmentation bank: teacher outputs of R fixed augmented views per image (docs/teacher-cache.md).

Methods whose teacher must see augmented views can read them from the cache instead of running the
teacher every step. Each view's parameters (crop box, flip, colour jitter, grayscale, blur) are a
seeded function of (seed, image, r) and are stored with the entry, so the student can be shown the very
same crop at its own resolution. Training on a bank sees only R augmentations per image instead of a
fresh one every epoch: runs that use it record ``teacher_bank(R)`` in their ``approximations``.
"""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import torch
from torch.utils.data import Dataset

from ssdistill.cache.fill import chunk_rows_for, teacher_compute
from ssdistill.cache.store import Entry, EntryKey, cache_root, open_or_fill
from ssdistill.config import AugConfig
from ssdistill.data.datasets import ImageSource
from ssdistill.data.replay import AugParams, render, sample_params
from ssdistill.distributed import launch_rank_world
from ssdistill.files import atomic_output, atomic_write_text
from ssdistill.models.teachers import FrozenTeacher


def bank_params(source: ImageSource, aug: AugConfig, repeats: int, seed: int, resolution: int) -> np.ndarray:
    """[N * R, P] parameter rows; row i * R + r describes view r of image i."""
    rows = []
    for index in range(len(source)):
        width, height = source.size(index)
        for r in range(repeats):
            rng = random.Random(f"{seed}:{index}:{r}")
            rows.append(sample_params(width, height, aug, rng, resolution).as_row())
    return np.asarray(rows, dtype=np.float64)


class _TeacherBankViews(Dataset):
    def __init__(self, source: ImageSource, params: np.ndarray, repeats: int, resolution: int, interpolation: str) -> None:
        self.source, self.params, self.repeats = source, params, repeats
        self.resolution, self.interpolation = resolution, interpolation

    def __len__(self) -> int:
        return len(self.params)

    def __getitem__(self, row: int) -> torch.Tensor:
        image = self.source.load(row // self.repeats)
        return render(image, AugParams.from_row(self.params[row]), self.resolution, self.interpolation)


class BankViews(Dataset):
    """Training dataset over a bank: each load of image i draws one of its R views and renders it for the student.

    Yields ``{"index": i, "bank_row": i * R + r, "label", "views": {"student": tensor}}``."""

    def __init__(self, source: ImageSource, params: np.ndarray, repeats: int, resolution: int) -> None:
        self.source, self.params, self.repeats, self.resolution = source, params, repeats, resolution

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        r = int(torch.randint(self.repeats, (1,)))
        row = index * self.repeats + r
        image = self.source.load(index)
        label = -1 if self.source.labels is None else self.source.labels[index]
        view = render(image, AugParams.from_row(self.params[row]), self.resolution)
        return {"index": index, "bank_row": row, "label": label, "views": {"student": view}}


class BankCrops(Dataset):
    """Multi-crop training dataset over a bank: each load of image i draws ``crops`` distinct views of its R and renders
    them for the student (``<name>0``, ``<name>1``, ...: the very boxes, flips and colours the teacher saw, at the student's
    resolution), plus the ``views`` rendered afresh (for example local crops).

    Yields ``{"index": i, "label", "bank_row0": i * R + r0, "bank_row1", ..., "views": {"<name>0": tensor, ..., **views}}``."""

    def __init__(
        self, source: ImageSource, params: np.ndarray, repeats: int, resolution: int, crops: int, views: dict | None = None, name: str = "bank"
    ) -> None:
        if crops > repeats:
            raise ValueError(f"{crops} distinct crops per image need a bank of at least as many views per image, it has {repeats}")
        self.source, self.params, self.repeats, self.resolution, self.crops = source, params, repeats, resolution, crops
        self.views, self.name = views or {}, name

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        image = self.source.load(index)
        item = {"index": index, "label": -1 if self.source.labels is None else self.source.labels[index], "views": {}}
        for c, r in enumerate(torch.randperm(self.repeats)[: self.crops].tolist()):
            row = index * self.repeats + r
            item[f"bank_row{c}"] = row
            item["views"][f"{self.name}{c}"] = render(image, AugParams.from_row(self.params[row]), self.resolution)
        for name, view in self.views.items():
            item["views"][name] = view(image)
        return item


def cached_teacher_bank(
    teacher: FrozenTeacher,
    source: ImageSource,
    dataset_name: str,
    aug: AugConfig,
    repeats: int,
    seed: int,
    batch_size: int = 256,
    num_workers: int = 2,
    device: torch.device | str = "cpu",
    root: str | None = None,
    dtype: str = "float16",
) -> tuple[torch.Tensor, np.ndarray]:
    """Teacher outputs [N * R, D] of the bank's views and their parameters [N * R, P]; filled on first use."""
    pre = teacher.preprocess
    aug_spec = hashlib.sha1(json.dumps(aug.model_dump(), sort_keys=True).encode()).hexdigest()[:12]
    key = EntryKey(
        teacher=teacher.name,
        teacher_fingerprint=teacher.fingerprint,
        tap=teacher.output,
        view=f"bank:R={repeats}:seed={seed}:aug={aug_spec}:{pre.resolution}:{pre.interpolation}:render2",  # render2: crop clamped
        dataset_fingerprint=source.fingerprint(),
        n=len(source) * repeats,
        dtype=dtype,
    )
    entry = Entry(cache_root(root), key, teacher.dim, chunk_rows_for(batch_size), label=f"{dataset_name} (augmentation bank, R={repeats})")
    params_path = entry.dir / "params.npy"
    if params_path.is_file():
        params = np.load(params_path)
    else:
        params = bank_params(source, aug, repeats, seed, pre.resolution)
        try:
            entry.dir.mkdir(parents=True, exist_ok=True)
            with atomic_output(params_path) as tmp, open(tmp, "wb") as handle:
                np.save(handle, params)
            atomic_write_text(
                entry.dir / "params-columns.txt",
                "top left height width flip jitter brightness contrast saturation hue grayscale blur_sigma jitter_order0 jitter_order1 jitter_order2 jitter_order3\n",
            )
        except OSError as exc:
            entry.discard_if_unused()
            raise entry.storage_error(exc, "writing", entry.nbytes + params.nbytes) from None
    views = _TeacherBankViews(source, params, repeats, pre.resolution, pre.interpolation)
    compute = teacher_compute(teacher, views, batch_size, num_workers, device, f"teacher bank {dataset_name}")
    rank, world = launch_rank_world()
    return open_or_fill(entry, compute, rank, world), params
