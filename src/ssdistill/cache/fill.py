"""Running a frozen teacher over dataset rows for the embedding store, and the cache key of a teacher signal."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Dataset, Subset

from ssdistill.cache.store import Entry, EntryKey, cache_root, open_or_fill
from ssdistill.data.datasets import ImageSource
from ssdistill.distributed import launch_rank_world
from ssdistill.errors import DataError
from ssdistill.eval.features import ViewedImages, model_outputs
from ssdistill.models.teachers import FrozenTeacher


def chunk_rows_for(batch_size: int) -> int:
    """Rows per cache chunk: about 4096, a multiple of the fill batch so batch boundaries never straddle chunks."""
    return batch_size * max(1, 4096 // batch_size)


def original_view_spec(teacher: FrozenTeacher) -> str:
    pre = teacher.preprocess
    return f"original:{pre.resolution}:{pre.crop_pct}:{pre.interpolation}"


def teacher_compute(
    teacher: FrozenTeacher, images: Dataset, batch_size: int, num_workers: int, device: torch.device | str, desc: str
) -> Callable[[list[int]], Iterator[torch.Tensor]]:
    """A ``compute(rows)`` for ``Entry.fill``: the teacher on ``images[row]`` (tensors), batch by batch, in row order
    (``eval.features.model_outputs``, with its progress bar), refusing non-finite outputs."""

    def compute(rows: list[int]) -> Iterator[torch.Tensor]:
        done = 0
        for out in model_outputs(teacher, Subset(images, rows), batch_size, num_workers, device, desc):
            finite = torch.isfinite(out).all(1)
            if not finite.all():  # never store NaN rows: a training step would fail on them much later
                bad = [rows[done + int(i)] for i in (~finite).nonzero().flatten()[:5]]
                raise DataError(f"the teacher gave non-finite outputs for rows {bad} of {desc}; check those images and the teacher weights")
            yield out
            done += len(out)

    return compute


def cached_teacher_features(
    teacher: FrozenTeacher,
    source: ImageSource,
    dataset_name: str,
    batch_size: int = 256,
    num_workers: int = 2,
    device: torch.device | str = "cpu",
    root: str | None = None,
    dtype: str = "float16",
) -> torch.Tensor:
    """Teacher outputs of the original view for every sample of ``source``: read from the cache, filled on first use."""
    entry = filled_teacher_entry(teacher, source, dataset_name, batch_size, num_workers, device, root, dtype)
    return entry.read(verify=False)  # open_or_fill has just checked it


def filled_teacher_entry(
    teacher: FrozenTeacher,
    source: ImageSource,
    dataset_name: str,
    batch_size: int = 256,
    num_workers: int = 2,
    device: torch.device | str = "cpu",
    root: str | None = None,
    dtype: str = "float16",
) -> Entry:
    """The complete cache entry of the teacher's original-view outputs over ``source`` (filled on first use);
    neighbour bags and k-means labels are stored beside it."""
    key = EntryKey(
        teacher=teacher.name,
        teacher_fingerprint=teacher.fingerprint,
        tap=teacher.output,
        view=original_view_spec(teacher),
        dataset_fingerprint=source.fingerprint(),
        n=len(source),
        dtype=dtype,
    )
    entry = Entry(cache_root(root), key, teacher.dim, chunk_rows_for(batch_size), label=dataset_name)
    rank, world = launch_rank_world()
    compute = teacher_compute(
        teacher, ViewedImages(source, teacher.original_view()), batch_size, num_workers, device, f"teacher cache {dataset_name}"
    )
    open_or_fill(entry, compute, rank, world)
    return entry
