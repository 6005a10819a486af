"""Batch samplers a method can ask the engine for (``Preparation.batch_sampler``).

``ClassPairBatchSampler``: supervised MCL's "two images per class" batches (METHODS 4.4; the official code's
MPerClassSampler with m = 2), so that every row of the in-batch contrast has a positive. Each batch draws B/2 classes
(distinct while the data has that many, else as evenly as possible) and two images of each, all images of a batch
different while a class has enough of them. An epoch has
``len(labels) // (B · world)`` batches per process, as many images as a plain shuffled epoch. The draw is a function
of (seed, epoch, rank): a resumed run sees the batches it would have seen, and under DDP every process draws its own.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler

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
