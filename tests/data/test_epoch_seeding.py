"""The default batches and the per-item seeding behind exact resume: batches are a function of (seed, epoch), processes
of a DDP launch get disjoint images, and an item's random draws depend on (seed, epoch, image) alone."""

from unittest import mock

import torch
from torch.utils.data import Dataset

from ssdistill.data.sampling import EpochKeyed, SeededItems, ShuffledBatchSampler


def test_batches_are_a_function_of_seed_and_epoch():
    sampler = ShuffledBatchSampler(50, 8, seed=3)
    first = list(sampler)
    assert len(first) == len(sampler) == 6 and len({i for b in first for i in b}) == 48  # drop_last, no repeats
    assert list(ShuffledBatchSampler(50, 8, seed=3)) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first


def test_ddp_processes_get_disjoint_images():
    shards = []
    for r in range(3):
        with mock.patch("ssdistill.data.sampling.rank", return_value=r), mock.patch("ssdistill.data.sampling.world_size", return_value=3):
            sampler = ShuffledBatchSampler(50, 4, seed=0)
            shards.append({i for b in sampler for i in b})
            assert len(sampler) == 4
    assert all(len(s) == 16 for s in shards) and not (shards[0] & shards[1] or shards[1] & shards[2] or shards[0] & shards[2])


class Draw(Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return i, torch.rand(3)


def test_an_item_s_random_draws_depend_on_seed_epoch_and_image_only():
    items = SeededItems(Draw(), seed=0)
    keyed = EpochKeyed(ShuffledBatchSampler(10, 5, seed=0), 10)
    keyed.set_epoch(2)
    keys = [k for batch in keyed for k in batch]
    assert all(20 <= k < 30 for k in keys)
    forward = {items[k][0]: items[k][1] for k in keys}
    torch.rand(100)  # whatever happened in between
    backward = {items[k][0]: items[k][1] for k in reversed(keys)}
    assert all(torch.equal(forward[i], backward[i]) for i in forward)
    assert not torch.equal(items[23][1], items[13][1])  # image 3 in epoch 2 and in epoch 1


def test_seeding_an_item_draws_what_torch_manual_seed_draws_and_leaves_cuda_uninitialised():
    import random

    import numpy as np

    from ssdistill.data.sampling import mix_seed, seed_everything_from

    def draws():
        return torch.rand(3).tolist(), random.random(), np.random.rand()

    seed_everything_from(5, 1, 7)
    ours = draws()
    torch.manual_seed(mix_seed(5, 1, 7))  # the CPU stream is the one torch.manual_seed gives: earlier results still hold
    random.seed(mix_seed(5, 1, 7))
    np.random.seed(mix_seed(5, 1, 7) % (1 << 32))
    assert draws() == ours
    seed_everything_from(5, 1, 8)
    assert draws()[0] != ours[0]
    if not torch.cuda.is_initialized():  # no lazy CUDA seeding queued (it records the Python stack, per image)
        with mock.patch("torch.cuda.random._lazy_call") as lazy:
            torch.manual_seed(1)
            assert lazy.called  # what torch.manual_seed costs in a CPU process
            lazy.reset_mock()
            seed_everything_from(5, 1, 7)
            lazy.assert_not_called()
