"""Stage taps and auxiliary branches on any student (L-MCL's feature-refinement branches, issue 45).

``student_stages`` splits a student into stem, stages and head so that running them in order is the student's own
forward (a CIFAR ResNet: its layer1..layer3; a timm model: its flattened children cut at the modules its
``feature_info`` names, checked once against the student's forward). ``auxiliary_branch`` builds a branch that maps
one stage's feature map to a pooled vector: ``copy`` = freshly initialised copies of the remaining stages and the
head (as the official code builds them), ``light`` = conv3x3-BN-ReLU, global average pool, Linear. ``StagedStudent``
returns [f_1, ..., f_S] per forward: the branches' features, then the student's own pooled feature.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ssdistill.errors import ModelError, short
from ssdistill.models.cifar_resnet import CifarResNet
from ssdistill.models.students import Student, create_timm, fixed_input_size

BRANCH_KINDS = ("copy", "light")
TOKEN_STAGES = 4  # blocks that all share one reduction (a plain ViT): tap this many, evenly spaced, the last included


class GlobalMean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class _ChannelsLast(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last)


class _ToNCHW(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)


class _Unsplittable(Exception):
    """Why a student's children, run in order, are not its forward (the reason becomes part of a ModelError)."""


@dataclass(eq=False)
class StagePlan:
    """A student's S stages: ``names`` (the module ending each stage), ``widths`` (channels), ``reductions`` (stride
    from the input), ``indices`` (positions in timm's feature_info). ``stem`` (normalisation included), ``stages`` and
    ``head`` are the student's own modules, not copies; they are None / empty when ``split_error`` says why the
    student cannot be split (its stage maps then come from timm's ``forward_intermediates``)."""

    student: Student
    names: list[str]
    widths: list[int]
    reductions: list[int]
    indices: list[int]
    stem: nn.Module | None = None
    stages: list[nn.Module] = field(default_factory=list)
    head: nn.Module | None = None
    split_error: str | None = None
    map_format: str = "NCHW"  # of the stage maps: NHWC for the stages of a channels-last timm model (Swin, MambaOut)

    @property
    def num_stages(self) -> int:
        return len(self.widths)

    @property
    def dim(self) -> int:
        return self.student.dim

    @property
    def splittable(self) -> bool:
        return self.split_error is None


def _flat(module: nn.Module, prefix: str, names: list[str]) -> list[tuple[str, nn.Module]]:
    """Named children in order, an nn.Sequential opened where a stage name lies inside it (as timm's features_only)."""
    out = []
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if isinstance(child, nn.Sequential) and any(n.startswith(full + ".") for n in names):
            out += _flat(child, full + ".", names)
        else:
            out.append((full, child))
    return out


def _split(backbone: nn.Module, names: list[str]) -> tuple[list[nn.Module], list[list[nn.Module]], list[nn.Module]]:
    """(stem, stages, head) module lists of ``backbone``, cut after each module of ``names``."""
    if isinstance(backbone, CifarResNet):
        return [backbone.conv1, backbone.bn1, nn.ReLU()], [[backbone.layer1], [backbone.layer2], [backbone.layer3]], [GlobalMean()]
    fmt = getattr(backbone, "output_fmt", "NCHW")
    if getattr(fmt, "value", fmt) not in ("NCHW", "NHWC"):
        raise _Unsplittable(f"its stages output {getattr(fmt, 'value', fmt)} tensors, not feature maps")
    if getattr(backbone, "drop_rate", 0):
        raise _Unsplittable("its head applies dropout (drop_rate) outside its modules")
    flat = _flat(backbone, "", names)
    order = [name for name, _ in flat]
    missing = [n for n in names if n not in order]
    if missing:
        raise _Unsplittable(f"stage module '{missing[0]}' lies inside a module that is not an nn.Sequential")
    cuts = [order.index(n) for n in names]
    if cuts != sorted(cuts):
        raise _Unsplittable("its feature_info modules are not in the order of its children")
    modules = [module for _, module in flat]
    stages = [modules[start + 1 : end + 1] for start, end in zip([cuts[0] - 1, *cuts[:-1]], cuts)]
    return modules[: cuts[0]], stages, modules[cuts[-1] + 1 :]


def _stage_entries(student: Student) -> tuple[list[str], list[int], list[int], list[int]]:
    backbone = student.backbone
    if isinstance(backbone, CifarResNet):
        return ["layer1", "layer2", "layer3"], [16, 32, 64], [1, 2, 4], [0, 1, 2]
    info = list(getattr(backbone, "feature_info", None) or [])
    if not info:
        raise ModelError(f"student {student.arch} has no timm feature_info, so its stages are unknown; use a timm model or a cifar_resnet")
    positions = list(range(len(info)))
    if len(info) > 1 and info[0]["reduction"] <= 2 < info[1]["reduction"]:
        positions = positions[1:]  # the stem's output: part of the stem, not a stage
    reductions = [info[p]["reduction"] for p in positions]
    if any(a >= b for a, b in zip(reductions, reductions[1:])):
        n = len(positions)
        positions = [positions[n * (k + 1) // min(TOKEN_STAGES, n) - 1] for k in range(min(TOKEN_STAGES, n))]
    return [info[p]["module"] for p in positions], [info[p]["num_chs"] for p in positions], [info[p]["reduction"] for p in positions], positions


_FAILURES = (RuntimeError, ValueError, TypeError, AssertionError)


def _probe(student: Student) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed input (64 px, else the model's own size) and the student's output on it."""
    param, backbone = next(student.parameters()), student.backbone
    sizes = [fixed_input_size(backbone) or (64, 64), tuple(backbone.pretrained_cfg.get("input_size", (3, 64, 64))[-2:])]
    for size in sizes:
        generator = torch.Generator().manual_seed(0)
        images = torch.rand(2, student.normalize.mean.shape[1], *size, generator=generator).to(param.device, param.dtype)
        try:
            return images, student(images)
        except _FAILURES as error:
            failure = error
    raise _Unsplittable(f"it does not run on a probe input: {short(str(failure), 80)}")


def _verify(plan: StagePlan) -> None:
    """One no-grad forward in eval mode on a fixed input (no RNG drawn, no BN statistics touched; modes restored)."""
    student = plan.student
    modes = {module: module.training for module in student.modules()}
    student.eval()
    try:
        with torch.no_grad():
            images, expected = _probe(student)
            got = stage_maps(plan, images)[1]
    except _FAILURES as error:
        raise _Unsplittable(f"its children run in order fail: {short(str(error), 80)}") from error
    finally:
        for module, mode in modes.items():
            module.training = mode
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
        raise _Unsplittable("its children run in order do not reproduce its forward")


def student_stages(student: Student) -> StagePlan:
    """The student's stages (see the module docstring); widths and reductions come from feature_info, not a forward."""
    names, widths, reductions, indices = _stage_entries(student)
    plan = StagePlan(student, names, widths, reductions, indices)
    try:
        if len(set(reductions)) < len(reductions):
            raise _Unsplittable("its blocks share one resolution: a token model (ViT-like) has no spatial stages")
        stem, stages, head = _split(student.backbone, names)
        layout = [_ChannelsLast()] if student.channels_last else []
        plan.stem, plan.stages, plan.head = (
            nn.Sequential(student.normalize, *layout, *stem),
            [nn.Sequential(*s) for s in stages],
            nn.Sequential(*head),
        )
        fmt = getattr(student.backbone, "output_fmt", "NCHW")
        plan.map_format = getattr(fmt, "value", fmt)
        _verify(plan)
    except _Unsplittable as reason:
        plan.stem, plan.stages, plan.head, plan.split_error, plan.map_format = None, [], None, str(reason), "NCHW"
        if not hasattr(student.backbone, "forward_intermediates"):
            raise ModelError(f"student {student.arch} cannot be split into stages ({reason}) and has no forward_intermediates") from None
    return plan


def stage_maps(plan: StagePlan, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One forward of the student: every stage's feature map (``plan.map_format``) and its own pooled feature [B, dim]."""
    if plan.split_error is None:
        x, maps = plan.stem(images), []
        for stage in plan.stages:
            x = stage(x)
            maps.append(x)
        return maps, plan.head(x)
    student, backbone = plan.student, plan.student.backbone
    x = student.normalize(images)
    if student.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    final, maps = backbone.forward_intermediates(x, indices=plan.indices, output_fmt="NCHW")
    return list(maps), backbone.forward_head(final)


class AuxiliaryBranch(nn.Sequential):
    """Stage ``stage``'s feature map -> a pooled vector [B, out_dim]; ``kind`` is 'copy' or 'light'."""

    def __init__(self, *modules: nn.Module, kind: str = "", stage: int = -1, out_dim: int = 0) -> None:
        super().__init__(*modules)  # keyword defaults: nn.Sequential's slicing rebuilds the class from the modules alone
        self.kind, self.stage, self.out_dim = kind, stage, out_dim


def auxiliary_branch(plan: StagePlan, stage_index: int, kind: str = "copy", width: int | None = None, out_dim: int | None = None) -> AuxiliaryBranch:
    """A branch on stage ``stage_index`` (0-based, below the last). ``copy``: the remaining stages and the head taken
    from a freshly built instance of the student's architecture (the student's own init, no shared weights), so its
    output has the student's width. ``light``: Conv3x3(C_k -> width, default C_k)-BN-ReLU, global average pool,
    Linear(width -> out_dim, default the student's width)."""
    arch, last = plan.student.arch, plan.num_stages - 1
    if kind not in BRANCH_KINDS:
        raise ModelError(f"auxiliary branch kind must be one of {', '.join(BRANCH_KINDS)}, got '{kind}'")
    if not 0 <= stage_index < last:
        raise ModelError(f"auxiliary branches go on stages 0..{last - 1} of student {arch} (stage {last} is its own feature), got {stage_index}")
    if kind == "light":
        channels, width, out_dim = plan.widths[stage_index], width or plan.widths[stage_index], out_dim or plan.dim
        layers = [_ToNCHW()] if plan.map_format == "NHWC" else []
        layers += [
            nn.Conv2d(channels, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, out_dim),
        ]
        param = next(plan.student.parameters())
        return AuxiliaryBranch(*layers, kind=kind, stage=stage_index, out_dim=out_dim).to(param.device, param.dtype)
    if width is not None or out_dim is not None:
        raise ModelError("auxiliary branch width and out_dim apply to kind 'light' only; a 'copy' branch has the student's width")
    if not plan.splittable:
        raise ModelError(f"student {arch} cannot be split into sequential stages ({plan.split_error}); use auxiliary branch kind 'light'")
    fresh = create_timm(arch, pretrained=False, num_classes=0, **plan.student.model_args)
    param = next(plan.student.parameters())
    fresh = fresh.to(param.device, param.dtype)
    if plan.student.channels_last:
        fresh = fresh.to(memory_format=torch.channels_last)
    _, stages, head = _split(fresh, plan.names)
    modules = [m for stage in stages[stage_index + 1 :] for m in stage] + head
    return AuxiliaryBranch(*modules, kind=kind, stage=stage_index, out_dim=plan.dim)


class StagedStudent(nn.Module):
    """A student and its auxiliary branches: images -> [f_1, ..., f_S], f_k = branch k on stage k's map ([B, dims[k]]),
    f_S = the student's own pooled feature. ``taps`` picks the stages that get a branch (default every stage but the
    last). The student stays a plain submodule (``self.student``): its state dict keys are unchanged."""

    def __init__(self, student: Student, kind: str = "copy", taps: list[int] | None = None, width: int | None = None, out_dim: int | None = None):
        super().__init__()
        self.student, self.kind = student, kind
        self.plan = student_stages(student)
        self.taps = list(range(self.plan.num_stages - 1)) if taps is None else sorted(set(taps))
        self.branches = nn.ModuleList(auxiliary_branch(self.plan, k, kind, width, out_dim) for k in self.taps)
        self.dims = [branch.out_dim for branch in self.branches] + [student.dim]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        maps, final = stage_maps(self.plan, images)
        return [branch(maps[k]) for k, branch in zip(self.taps, self.branches)] + [final]
