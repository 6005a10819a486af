"""A teacher checkpoint's own self-supervised head, read as plain tensors (RoB's ``target: head``, docs/methods/rob.md).

The heads of joint-embedding checkpoints share one shape: an MLP (Linear layers, optionally each followed by
BatchNorm1d, GELU between them) whose output is L2-normalised and compared with K unit rows (DINO's weight-normalised
``last_layer``, MSN's ``prototypes``); BYOL / SimSiam projectors have no last layer. ``read_ssl_head`` finds these
tensors under a key prefix of a checkpoint (nested dicts are flattened with dots, so a DINO full checkpoint's teacher head
is ``teacher.head.``, an MSN checkpoint's target projector ``target_encoder.module.fc.`` with ``prototypes``) and returns
them under canonical names; ``ssl_head`` is the frozen head as a pure function of them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.nn import functional as F

from ssdistill.errors import ModelError
from ssdistill.models.checkpoints import flatten_tensors, load_checkpoint


def read_checkpoint_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint (.pth / .ckpt / .safetensors), nested dicts flattened with dots."""
    return flatten_tensors(load_checkpoint(path, "method.teacher_head"))


def read_ssl_head(path: str | Path, prefix: str, prototypes: str | None = None) -> dict[str, torch.Tensor]:
    """The head's tensors: ``linear{i}.weight/bias``, ``bn{i}.weight/bias/mean/var`` (BN after Linear i) and ``last``
    [K, d] (unit rows: the weight-normalised last layer, or the normalised ``prototypes``; absent for a projector)."""
    tensors = read_checkpoint_tensors(path)
    head = {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}
    if not head:
        near = sorted({key.rsplit(".", 2)[0] for key in tensors if key.endswith("weight")})[:6]
        raise ModelError(f"no tensor of {path} starts with '{prefix}': set method.teacher_head_prefix (modules there: {', '.join(near)})")
    params: dict[str, torch.Tensor] = {}
    modules = list(dict.fromkeys(key.rsplit(".", 1)[0] for key in head if not key.startswith("last_layer")))
    linear = 0
    for module in modules:
        weight = head.get(f"{module}.weight")
        if f"{module}.running_mean" in head:  # BatchNorm1d after the previous Linear
            params[f"bn{linear - 1}.mean"], params[f"bn{linear - 1}.var"] = head[f"{module}.running_mean"], head[f"{module}.running_var"]
            params[f"bn{linear - 1}.weight"], params[f"bn{linear - 1}.bias"] = weight, head[f"{module}.bias"]
        elif weight is not None and weight.ndim == 2:
            params[f"linear{linear}.weight"] = weight
            if f"{module}.bias" in head:
                params[f"linear{linear}.bias"] = head[f"{module}.bias"]
            linear += 1
    if linear == 0:
        raise ModelError(f"the head under '{prefix}' in {path} has no Linear layer")
    last = _last_layer(head)
    if prototypes is not None:
        if prototypes not in tensors:
            raise ModelError(f"{path} has no tensor '{prototypes}' for the prototypes: set method.teacher_prototypes")
        last = F.normalize(tensors[prototypes].float(), dim=1)
    if last is not None:
        width = params[f"linear{linear - 1}.weight"].shape[0]
        if last.shape[1] != width:
            raise ModelError(f"the head's last layer / prototypes are {tuple(last.shape)} but its MLP gives {width}-d outputs")
        params["last"] = last
    return {key: value.float() for key, value in params.items()}


def _last_layer(head: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """DINO's last layer as unit rows: weight_norm's g * v / |v| (g = 1 when the norm was frozen), or a plain weight."""
    if "last_layer.weight_v" in head or "last_layer.parametrizations.weight.original1" in head:
        old = "last_layer.weight_v" in head
        v = head["last_layer.weight_v" if old else "last_layer.parametrizations.weight.original1"].float()
        g = head["last_layer.weight_g" if old else "last_layer.parametrizations.weight.original0"].float()
        return g.view(-1, 1) * F.normalize(v, dim=1)
    if "last_layer.weight" in head:
        return head["last_layer.weight"].float()
    return None


def ssl_head(z: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """The frozen head on teacher embeddings z [B, D]: n(MLP(z)) @ lastᵀ [B, K], or n(MLP(z)) without a last layer."""
    x = z.float()
    layers = sum(1 for key in params if key.startswith("linear") and key.endswith(".weight"))
    for i in range(layers):
        x = F.linear(x, params[f"linear{i}.weight"], params.get(f"linear{i}.bias"))
        if f"bn{i}.mean" in params:
            x = F.batch_norm(x, params[f"bn{i}.mean"], params[f"bn{i}.var"], params[f"bn{i}.weight"], params[f"bn{i}.bias"], training=False)
        if i < layers - 1:
            x = F.gelu(x)
    x = F.normalize(x, dim=-1)
    return x @ params["last"].T if "last" in params else x
