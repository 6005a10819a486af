"""Config fields and the exclusion mask shared by the methods that contrast against a queue of keys (MoCo-v2,
SEED, DisCo, BINGO; docs/methods/baselines.md).

``mask_same_id`` (default off, as in every official code): older queue keys written for the query's own image
(and, for BINGO, for its drawn neighbour) are left out of the negatives. The official queues (65,536 keys over
1.28M ImageNet images) rarely hold such a key; ours are capped at the dataset size, so after the first epoch they
always hold one older key of every image, which then counts as a negative unless this switch is on.
"""

from __future__ import annotations

import torch
from pydantic import Field

from ssdistill.config import MethodConfig, official
from ssdistill.losses.queue import KeyQueue, capped_queue_size


class QueueConfig(MethodConfig):
    queue_size: int = Field(
        65536, gt=0, description="keys kept in the queue (capped at the number of training images)", json_schema_extra=official(65536)
    )
    mask_same_id: bool = Field(
        False,
        description="leave older queue keys of the query's own image (BINGO: and of its neighbour) out of the negatives (off in every official code)",
        json_schema_extra=official(False),
    )


def excluded_keys(cfg: QueueConfig, queue: KeyQueue, *ids: torch.Tensor) -> torch.Tensor | None:
    """[B, queue] mask of the keys written for any of ``ids`` when ``mask_same_id`` is on, else None (no mask)."""
    if not cfg.mask_same_id:
        return None
    mask = queue.same_image(ids[0])
    for more in ids[1:]:
        mask = mask | queue.same_image(more)
    return mask


def key_queue(cfg: QueueConfig, dim: int, dataset_size: int | None, seed: int, members: int | None = None) -> KeyQueue:
    """A queue of ``queue_size`` keys of width ``dim``, capped at the number of training images (``members``: the
    column-aligned queues of a cohort, one pointer)."""
    return KeyQueue(capped_queue_size(cfg.queue_size, dataset_size or cfg.queue_size), dim, seed=seed, members=members)
