import copy

import pytest
import torch
from torch import nn

from ssdistill.errors import ModelError
from ssdistill.models.stages import AuxiliaryBranch, GlobalMean, StagedStudent, auxiliary_branch, stage_maps, student_stages
from ssdistill.models.students import Student

SPLITS = [
    ("cifar_resnet20", 32, ["layer1", "layer2", "layer3"], [16, 32, 64], [1, 2, 4]),
    ("resnet18", 64, ["layer1", "layer2", "layer3", "layer4"], [64, 128, 256, 512], [4, 8, 16, 32]),
    ("mobilenetv3_small_050", 64, ["blocks.0", "blocks.1", "blocks.3", "blocks.5"], [8, 16, 24, 288], [4, 8, 16, 32]),
]


def _run(plan, images):
    x, maps = plan.stem(images), []
    for stage in plan.stages:
        x = stage(x)
        maps.append(x)
    return maps, plan.head(x)


@pytest.mark.parametrize("arch,px,names,widths,reductions", SPLITS)
def test_stages_in_order_are_the_student_forward(arch, px, names, widths, reductions):
    torch.manual_seed(0)
    student = Student(arch)
    rng = torch.get_rng_state()
    plan = student_stages(student)
    assert torch.equal(torch.get_rng_state(), rng)  # the check forward draws nothing from the global generator
    assert (plan.names, plan.widths, plan.reductions, plan.split_error) == (names, widths, reductions, None)
    images = torch.rand(2, 3, px, px)
    student.eval()
    maps, pooled = _run(plan, images)
    assert torch.equal(pooled, student(images))
    assert [m.shape[1:] for m in maps] == [(c, px // r, px // r) for c, r in zip(widths, reductions)]
    # in training mode too (batch statistics, running-stat updates): the staged run is the student's forward step
    staged, plain = copy.deepcopy(student).train(), copy.deepcopy(student).train()
    assert torch.equal(stage_maps(student_stages(staged), images)[1], plain(images))
    assert all(torch.equal(a, b) for a, b in zip(staged.state_dict().values(), plain.state_dict().values()))


def test_copy_branches_are_fresh_copies_of_the_remaining_stages():
    torch.manual_seed(0)
    student = Student("cifar_resnet20")
    staged = StagedStudent(student, "copy")
    feats = staged(torch.rand(4, 3, 32, 32))
    assert staged.dims == [64, 64, 64] and [f.shape for f in feats] == [(4, 64)] * 3
    first, second = staged.branches
    assert isinstance(first, AuxiliaryBranch) and (first.kind, first.stage, first.out_dim) == ("copy", 0, 64)
    assert [len(m) for m in first[:2]] == [3, 3] and isinstance(first[2], GlobalMean) and len(second) == 2  # layer2+layer3+pool / layer3+pool
    backbone = student.backbone
    own = {id(p) for p in student.parameters()}
    assert not own & {id(p) for p in staged.branches.parameters()}
    assert not {id(p) for p in first.parameters()} & {id(p) for p in second.parameters()}
    assert first[0][0].conv1.weight.shape == backbone.layer2[0].conv1.weight.shape
    assert not torch.equal(first[0][0].conv1.weight, backbone.layer2[0].conv1.weight)  # re-initialised, not a clone
    assert not torch.equal(first[1][0].conv1.weight, second[0][0].conv1.weight)  # the two layer3 copies differ
    assert list(staged.student.state_dict()) == list(Student("cifar_resnet20").state_dict())  # the student's keys unchanged


def test_gradient_reaches_the_stem_through_an_auxiliary_branch_only():
    torch.manual_seed(0)
    staged = StagedStudent(Student("cifar_resnet20"), "copy")
    staged(torch.rand(2, 3, 32, 32))[0].sum().backward()
    backbone = staged.student.backbone
    assert backbone.conv1.weight.grad.abs().sum() > 0 and backbone.layer1[0].conv1.weight.grad.abs().sum() > 0
    assert backbone.layer2[0].conv1.weight.grad is None and backbone.layer3[0].conv1.weight.grad is None
    assert staged.branches[0][0][0].conv1.weight.grad.abs().sum() > 0 and staged.branches[1][0][0].conv1.weight.grad is None


def test_light_branch_shapes_and_widths():
    torch.manual_seed(0)
    student = Student("mobilenetv3_small_050")
    plan = student_stages(student)
    branch = auxiliary_branch(plan, 1, "light", width=12, out_dim=5)
    assert [type(m) for m in branch] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear]
    assert (branch[0].in_channels, branch[0].out_channels, branch[-1].out_features, branch.out_dim) == (16, 12, 5, 5)
    assert branch(torch.rand(3, 16, 8, 8)).shape == (3, 5)
    staged = StagedStudent(student, "light", taps=[2, 0])
    assert staged.taps == [0, 2] and staged.dims == [1024, 1024, 1024]
    assert [f.shape for f in staged(torch.rand(2, 3, 64, 64))] == [(2, 1024)] * 3
    assert staged.branches[0][0].in_channels == 8 and staged.branches[1][0].in_channels == 24  # default width: the stage's own


def test_channels_last_stages_get_a_permute_before_the_light_head():
    torch.manual_seed(0)
    student = Student("test_mambaout").eval()
    staged = StagedStudent(student, "light")
    assert staged.plan.map_format == "NHWC" and staged.plan.splittable
    images = torch.rand(2, 3, 64, 64)
    feats = staged.eval()(images)
    assert torch.equal(feats[-1], student(images)) and [f.shape[1] for f in feats] == staged.dims == [student.dim] * 4


def test_a_token_model_cannot_be_copied_but_takes_light_branches():
    torch.manual_seed(0)
    student = Student("test_vit", resolution=32).eval()
    plan = student_stages(student)
    assert plan.names == ["blocks.0", "blocks.2", "blocks.3", "blocks.5"] and not plan.splittable  # 6 blocks: 4 evenly spaced taps
    message = (
        "student test_vit cannot be split into sequential stages (its blocks share one resolution: a token model (ViT-like) has no "
        "spatial stages); use auxiliary branch kind 'light'"
    )
    with pytest.raises(ModelError) as caught:
        auxiliary_branch(plan, 0, "copy")
    assert str(caught.value) == message
    staged = StagedStudent(student, "light").eval()
    images = torch.rand(2, 3, 32, 32)
    feats = staged(images)
    assert torch.equal(feats[-1], student(images)) and [f.shape for f in feats] == [(2, 64)] * 4


def test_a_head_with_functional_dropout_cannot_be_copied():
    student = Student("test_resnet", model_args={"drop_rate": 0.1})
    with pytest.raises(ModelError) as caught:
        StagedStudent(student, "copy")
    assert str(caught.value) == (
        "student test_resnet cannot be split into sequential stages (its head applies dropout (drop_rate) outside its modules); "
        "use auxiliary branch kind 'light'"
    )


def test_bad_branch_requests_say_what_to_do():
    student = Student("cifar_resnet20")
    plan = student_stages(student)
    cases = [
        (dict(stage_index=0, kind="heavy"), "auxiliary branch kind must be one of copy, light, got 'heavy'"),
        (dict(stage_index=2, kind="copy"), "auxiliary branches go on stages 0..1 of student cifar_resnet20 (stage 2 is its own feature), got 2"),
        (
            dict(stage_index=0, kind="copy", out_dim=32),
            "auxiliary branch width and out_dim apply to kind 'light' only; a 'copy' branch has the student's width",
        ),
    ]
    for kwargs, message in cases:
        with pytest.raises(ModelError) as caught:
            auxiliary_branch(plan, **kwargs)
        assert str(caught.value) == message
    student.backbone = nn.Sequential(nn.Conv2d(3, 4, 3))  # neither a CIFAR ResNet nor a timm model
    with pytest.raises(
        ModelError, match=r"^student cifar_resnet20 has no timm feature_info, so its stages are unknown; use a timm model or a cifar_resnet$"
    ):
        student_stages(student)


def test_a_deep_copy_keeps_its_plan_on_its_own_modules():
    staged = StagedStudent(Student("cifar_resnet20"), "light")
    twin = copy.deepcopy(staged)
    assert twin.plan.stem[1] is twin.student.backbone.conv1 and twin.plan.stages[0][0] is twin.student.backbone.layer1
    images = torch.rand(2, 3, 32, 32)
    assert all(torch.equal(a, b) for a, b in zip(staged.eval()(images), twin.eval()(images)))
