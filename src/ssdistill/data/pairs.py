"""``neighbour_pair`` views (docs/methods/index.md): each load of item i draws one member p of its bag and returns views
of both. Views are either rendered here (``views``: name -> generator, applied to the anchor as ``<name>a`` and to
the neighbour as ``<name>p``) or, for a teacher augmentation bank, the bank rows of one random stored view each."""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torch.utils.data import Dataset

from ssdistill.data.datasets import ImageSource


class NeighbourPairViews(Dataset):
    def __init__(
        self,
        source: ImageSource,
        bags: torch.Tensor,
        views: dict[str, Callable[[Image.Image], torch.Tensor]],
        bank_repeats: int | None = None,
    ) -> None:
        if bags.ndim != 2 or len(bags) != len(source):
            raise ValueError(f"bags must be [N, K] with N = {len(source)} images, got {tuple(bags.shape)}")
        self.source, self.bags, self.views, self.bank_repeats = source, bags, views, bank_repeats

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        bag = self.bags[index]
        neighbour = int(bag[int(torch.randint(len(bag), (1,)))])
        anchor_image, neighbour_image = self.source.load(index), self.source.load(neighbour)
        views = {}
        for name, view in self.views.items():
            views[f"{name}a"] = view(anchor_image)
            views[f"{name}p"] = view(neighbour_image)
        item = {"index": index, "neighbour": neighbour, "label": -1 if self.source.labels is None else self.source.labels[index], "views": views}
        if self.bank_repeats:
            draws = torch.randint(self.bank_repeats, (2,))
            item["bank_row"] = index * self.bank_repeats + int(draws[0])
            item["bank_row_neighbour"] = neighbour * self.bank_repeats + int(draws[1])
        return item
