"""A teacher checkpoint's own SSL head read as tensors (RoB target=head): DINO's head (MLP, normalised bottleneck,
weight-normalised last layer) and MSN's projector (Linear + BatchNorm, prototypes) reproduce the torch modules they were
saved from, inside nested checkpoints that carry their arguments; bad prefixes and keys are one-line errors."""

import argparse

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ssdistill.errors import ModelError
from ssdistill.models.ssl_head import read_ssl_head, ssl_head


class DinoHead(nn.Module):  # the official DINO head's structure (3 layers, bottleneck, weight-normalised last layer)
    def __init__(self, dim, hidden, bottleneck, out, norm_last_layer=True, parametrized=False):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, bottleneck))
        if parametrized:  # torch's current weight norm (original0 = g, original1 = v)
            self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck, out, bias=False))
            g = self.last_layer.parametrizations.weight.original0
        else:  # the deprecated one the released DINO checkpoints were saved with (weight_g, weight_v)
            with pytest.warns(FutureWarning):
                self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck, out, bias=False))
            g = self.last_layer.weight_g
        g.data.fill_(1.0) if norm_last_layer else g.data.uniform_(0.5, 2.0)

    def forward(self, x):
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


class MsnProjector(nn.Module):
    def __init__(self, dim, hidden, out):
        super().__init__()
        self.fc1, self.bn1 = nn.Linear(dim, hidden), nn.BatchNorm1d(hidden)
        self.fc2, self.bn2 = nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden)
        self.fc3 = nn.Linear(hidden, out)
        for bn in (self.bn1, self.bn2):
            bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 2), bn.bias.data.uniform_(-1, 1)

    def forward(self, x):
        x = F.gelu(self.bn1(self.fc1(x)))
        x = F.gelu(self.bn2(self.fc2(x)))
        return self.fc3(x)


@pytest.mark.parametrize("norm_last_layer, parametrized", [(True, False), (False, False), (False, True)])
def test_a_dino_full_checkpoint_s_teacher_head(tmp_path, norm_last_layer, parametrized):
    torch.manual_seed(0)
    head = DinoHead(12, 32, 8, 20, norm_last_layer, parametrized).eval()
    checkpoint = {
        "teacher": {"backbone.weight": torch.randn(3, 3), **{f"head.{k}": v for k, v in head.state_dict().items()}},
        "student": {"head.mlp.0.weight": torch.zeros(32, 12)},  # the student's head: not read
        "args": argparse.Namespace(arch="vit_small", out_dim=20),
        "epoch": 100,
    }
    torch.save(checkpoint, tmp_path / "dino.pth")
    params = read_ssl_head(tmp_path / "dino.pth", "teacher.head.")
    assert sorted(params) == ["last", "linear0.bias", "linear0.weight", "linear1.bias", "linear1.weight", "linear2.bias", "linear2.weight"]
    z = torch.randn(5, 12)
    with torch.no_grad():
        assert torch.allclose(ssl_head(z, params), head(z), atol=1e-5)
    if norm_last_layer:  # frozen weight norm: unit rows
        assert torch.allclose(params["last"].norm(dim=1), torch.ones(20), atol=1e-5)


def test_an_msn_target_projector_with_prototypes(tmp_path):
    torch.manual_seed(1)
    projector, prototypes = MsnProjector(12, 16, 6).eval(), torch.randn(10, 6) * 3
    checkpoint = {"target_encoder": {f"module.fc.{k}": v for k, v in projector.state_dict().items()}, "prototypes": prototypes, "epoch": 3}
    torch.save(checkpoint, tmp_path / "msn.pth")
    params = read_ssl_head(tmp_path / "msn.pth", "target_encoder.module.fc.", prototypes="prototypes")
    z = torch.randn(4, 12)
    with torch.no_grad():
        expected = F.normalize(projector(z), dim=1) @ F.normalize(prototypes, dim=1).T
    assert torch.allclose(ssl_head(z, params), expected, atol=1e-5)
    no_last = read_ssl_head(tmp_path / "msn.pth", "target_encoder.module.fc.")  # a projector alone (BYOL-style target)
    with torch.no_grad():
        assert torch.allclose(ssl_head(z, no_last), F.normalize(projector(z), dim=1), atol=1e-5)
    with pytest.raises(ModelError, match="set method.teacher_head_prefix"):
        read_ssl_head(tmp_path / "msn.pth", "teacher.head.")
    with pytest.raises(ModelError, match="set method.teacher_prototypes"):
        read_ssl_head(tmp_path / "msn.pth", "target_encoder.module.fc.", prototypes="protos")
    with pytest.raises(ModelError, match="not found"):
        read_ssl_head(tmp_path / "none.pth", "teacher.head.")
