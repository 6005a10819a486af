import pytest
import torch
from torch import nn

from ssdistill.errors import ModelError
from ssdistill.models.heads import L2Norm, mlp
from ssdistill.models.students import Student


def test_student_dim_matches_output_and_normalises_itself():
    student = Student("test_resnet", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).eval()
    images = torch.rand(2, 3, 32, 32)
    out = student(images)
    assert out.shape == (2, student.dim)
    expected = student.backbone((images - 0.5) / 0.25)
    assert torch.allclose(out, expected)


def test_mobilenet_dim_is_the_head_width():
    student = Student("mobilenetv3_small_100").eval()
    assert student.dim == 1024 and student(torch.rand(1, 3, 64, 64)).shape == (1, 1024)


def test_unknown_student_arch_suggests_a_name():
    with pytest.raises(ModelError, match="unknown timm architecture 'resnet19'.*did you mean"):
        Student("resnet19")


def test_mlp_layers():
    head = mlp([8, 16, 4], bn="hidden")
    assert [type(m) for m in head] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert head(torch.randn(5, 8)).shape == (5, 4)
    normed = mlp([8, 4], bn="none", out_l2norm=True)
    assert isinstance(normed[-1], L2Norm)
    assert torch.allclose(normed(torch.randn(3, 8)).norm(dim=1), torch.ones(3))
    assert [type(m) for m in mlp([8, 4], bn="all", act="gelu")] == [nn.Linear, nn.BatchNorm1d]
