"""Batch-statistics helpers: sub-batch forward keeps row order, BatchNorm in batch mode leaves no trace."""

import torch
from torch import nn

from ssdistill.models.batchnorm import batch_statistics, grouped_forward


def test_grouped_forward_restores_the_row_order_and_uses_each_sub_batch_statistics():
    torch.manual_seed(0)
    rows = torch.arange(12.0).view(12, 1)
    assert torch.equal(grouped_forward(lambda x: x * 2, rows, groups=3), rows * 2)
    centred = grouped_forward(lambda x: x - x.mean(0), rows, groups=3)  # each row minus its own sub-batch mean
    assert not torch.allclose(centred, rows - rows.mean(0)) and torch.allclose(centred.sum(), torch.tensor(0.0), atol=1e-5)
    assert torch.equal(grouped_forward(lambda x: x - x.mean(0), rows[:3], groups=8), rows[:3] - rows[:3].mean(0))  # ≥ 2 per group


def test_batch_statistics_normalise_with_the_batch_and_leave_the_layer_as_it_was():
    bn = nn.BatchNorm1d(2).eval()
    bn.running_mean.fill_(5.0)
    bn.running_var.fill_(4.0)
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    assert torch.allclose(bn(x), (x - 5.0) / (4.0 + 1e-5) ** 0.5)
    with batch_statistics(nn.Sequential(bn)):
        inside = bn(x)
    # batch mean (2, 4), biased batch variance (1, 4)
    expected = (x - torch.tensor([2.0, 4.0])) / (torch.tensor([1.0, 4.0]) + 1e-5).sqrt()
    assert torch.allclose(inside, expected, atol=1e-5)
    assert not bn.training and int(bn.num_batches_tracked) == 0
    assert torch.equal(bn.running_mean, torch.full((2,), 5.0)) and torch.equal(bn.running_var, torch.full((2,), 4.0))


def test_grouped_forward_never_leaves_a_group_of_one_image():
    """7 images in 3 groups: 3, 2, 2 (not 3, 3, 1, which BatchNorm refuses in training mode with a traceback)."""
    sizes = []
    grouped_forward(lambda x: sizes.append(len(x)) or x, torch.randn(7, 4), groups=3)
    assert sorted(sizes) == [2, 2, 3]
    bn = torch.nn.BatchNorm1d(4).train()
    for n in range(2, 12):
        for groups in range(1, 9):
            assert grouped_forward(bn, torch.randn(n, 4), groups).shape == (n, 4)
