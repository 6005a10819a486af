"""Batch samplers, and the seeding that makes a resumed run see exactly the data an uninterrupted one would.

``ShuffledBatchSampler``: the engine's default batches (a fresh permutation per epoch, dropping the last partial batch,
sharded across DDP processes), a function of (seed, epoch). ``EpochKeyed`` passes any batch sampler's indices to the
dataset as keys that also carry the epoch, and ``SeededItems`` seeds every random number generator from (seed, epoch,
image) before loading an item, so each item's augmentations are fixed whichever worker loads it, whether workers
persist across epochs, and whether the run was resumed (docs/distributed.md; issue: exact resume).

Batch samplers a method can ask the engine for (``Preparation.batch_sampler``):

``ClassPairBatchSampler``: supervised MCL's "two images per class" batches (docs/methods/mcl.md; the official code's
MPerClassSampler with m = 2), so that every row of the in-batch contrast has a positive. Each batch draws B/2 classes
(distinct while the data has that many, else as evenly as possible) and two images of each, all images of a batch
different while a class has enough of them. An epoch has
``len(labels) // (B · world)`` batches per process, as many images as a plain shuffled epoch. The draw is a function
of (seed, epoch, rank): a resumed run sees the batches it would have seen, and under DDP every process draws its own.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ssdistill.distributed import rank, world_size
from ssdistill.errors import DataError


class ClassPairBatchSampler(Sampler[list[int]]):
    def __init__(self, labels: Sequence[int], batch_size: int, seed: int = 0) -> None:
        if batch_size < 2 or batch_size % 2:
            raise DataError(f"two images per class need an even data.batch_size of at least 2, got {batch_size}")
        by_class: dict[int, list[int]] = {}
        for index, label in enumerate(labels):
            if label < 0:
                raise DataError("two images per class need every training image labelled (class sub-folders)")
            by_class.setdefault(int(label), []).append(index)
        self.classes = [torch.tensor(members) for _, members in sorted(by_class.items()) if len(members) >= 2]
        if not self.classes:
            raise DataError("two images per class need at least one class with two or more training images")
        self.size, self.batch_size, self.seed, self.epoch = len(labels), batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at the start of every epoch (also after a resume)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return max(1, self.size // (self.batch_size * world_size()))

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 1_009 + rank())
        pairs = self.batch_size // 2
        count = len(self.classes)
        for _ in range(len(self)):
            # B/2 classes: whole random permutations of the classes, then a random part of one more
            rounds = [torch.randperm(count, generator=generator) for _ in range(-(-pairs // count))]
            chosen = torch.cat(rounds)[:pairs].tolist()
            picks = {c: self._distinct(c, 2 * chosen.count(c), generator) for c in set(chosen)}
            batch = []
            for c in chosen:  # each pair: the next two of its class's picks
                batch += picks[c][:2]
                picks[c] = picks[c][2:]
            yield batch

    def _distinct(self, c: int, wanted: int, generator: torch.Generator) -> list[int]:
        """``wanted`` images of class ``c``, all different while the class has that many (then as few repeats as possible)."""
        members = self.classes[c]
        draws = [members[torch.randperm(len(members), generator=generator)] for _ in range(-(-wanted // len(members)))]
        return torch.cat(draws)[:wanted].tolist()


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, epoch, index, ...): distinct tuples give unrelated seeds."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value ^ (int(part) + 0x9E3779B97F4A7C15 + (value << 6) + (value >> 2))) * 0xBF58476D1CE4E5B9 % (1 << 63)
    return value


def seed_everything_from(*parts: int) -> None:
    """Seed torch (CPU, and every GPU once CUDA is initialised), Python's random and NumPy from ``mix_seed(*parts)``.

    Called once per image by the datasets: ``torch.manual_seed`` would also queue a lazy CUDA seeding while CUDA is not
    initialised (always, in a data worker or a CPU run), and that records the Python stack on every call, which cost
    about a sixth of a CPU smoke run. A process that uses its GPU has initialised CUDA before its first batch, so its
    GPU generators are still seeded here."""
    seed = mix_seed(*parts)
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)
    random.seed(seed)
    np.random.seed(seed % (1 << 32))


class ShuffledBatchSampler(Sampler[list[int]]):
    """Batches of a random permutation of ``size`` items, drawn from (seed, epoch); under DDP each process takes every
    world-th item of the permutation, so processes see disjoint images; the last partial batch is dropped."""

    def __init__(self, size: int, batch_size: int, seed: int = 0) -> None:
        self.size, self.batch_size, self.seed, self.epoch = size, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return (self.size // world_size()) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        order = torch.randperm(self.size, generator=generator)[rank() :: world_size()].tolist()
        for b in range(len(self)):
            yield order[b * self.batch_size : (b + 1) * self.batch_size]


class EpochKeyed(Sampler[list[int]]):
    """A batch sampler whose indices i become keys ``epoch * size + i`` for ``SeededItems``."""

    def __init__(self, batches: Sampler, size: int) -> None:
        self.batches, self.size, self.epoch = batches, size, 0
        self.resume_at: tuple[int, int] | None = None  # (epoch, batches already trained in it): skipped once
        # Lightning calls set_epoch on ``loader.sampler`` and ``loader.batch_sampler.sampler`` only, never on a batch
        # sampler itself: this attribute is how the epoch reaches us (and through us a method's own batch sampler)
        self.sampler = _EpochSetter(self)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if callable(getattr(self.batches, "set_epoch", None)):
            self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        skip = self.resume_at[1] if self.resume_at is not None and self.resume_at[0] == self.epoch else 0
        self.resume_at = None
        for b, batch in enumerate(self.batches):
            if b >= skip:  # a run resumed mid-epoch continues with the batch after the last one it trained
                yield [self.epoch * self.size + int(i) for i in batch]


class _EpochSetter:
    def __init__(self, owner: EpochKeyed) -> None:
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)


class ResumableLoader(DataLoader):
    """A DataLoader over ``EpochKeyed`` batches that Lightning checkpoints: its state is (epoch, batches trained in it,
    read from ``progress()``), so a run resumed from a mid-epoch checkpoint skips exactly those batches."""

    progress: Callable[[], int] | None = None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.batch_sampler.epoch, "batches": self.progress() if self.progress is not None else 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Called before the resumed run's first iterator is made (workers fetch indices as soon as it exists)."""
        epoch, done = int(state["epoch"]), int(state["batches"])
        if done >= len(self.batch_sampler):  # an end-of-epoch checkpoint: the next epoch starts afresh
            self.batch_sampler.set_epoch(epoch + 1)
        else:
            self.batch_sampler.set_epoch(epoch)
            self.batch_sampler.resume_at = (epoch, done)


class SeededItems(Dataset):
    """Loads item ``i`` of ``dataset`` for key ``epoch * len + i`` after seeding every generator from (seed, epoch, i)."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.size = dataset, seed, len(dataset)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: int):
        epoch, index = divmod(int(key), self.size)
        seed_everything_from(self.seed, epoch, index)
        return self.dataset[index]
