import torch
from torch import nn

from ssdistill.models.momentum import momentum_copy, momentum_update


def test_momentum_update_by_hand():
    online = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        online.weight.copy_(torch.tensor([[1.0, 2.0]]))
    target = momentum_copy(online)
    assert not any(p.requires_grad for p in target.parameters())
    with torch.no_grad():
        online.weight.copy_(torch.tensor([[3.0, 6.0]]))
    momentum_update(target, online, 0.9)
    assert torch.allclose(target.weight, torch.tensor([[1.2, 2.4]]))
    momentum_update(target, online, 0.0)
    assert torch.equal(target.weight, online.weight)
