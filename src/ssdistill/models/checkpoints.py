"""Reading weight files (.safetensors, .pth, .th, .ckpt) into a flat state dict, with declared
key remapping and strict loading (missing or unexpected keys are errors)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from ssdistill.errors import ModelError

_NESTED_KEYS = ("state_dict", "model", "model_state_dict", "module")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"weights file {path} not found; set teacher.weights to an existing .safetensors/.pth file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise ModelError(f"cannot read weights file {path} ({str(exc).splitlines()[0]}); is it a PyTorch or safetensors file?") from None
    while isinstance(state, dict) and not _is_flat(state):
        inner = next((state[k] for k in _NESTED_KEYS if isinstance(state.get(k), dict)), None)
        if inner is None:
            raise ModelError(f"weights file {path} holds no state dict (top-level keys: {sorted(state)[:6]})")
        state = inner
    if not isinstance(state, dict):
        raise ModelError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    return state


def _is_flat(state: dict) -> bool:
    return bool(state) and all(isinstance(v, torch.Tensor) for v in state.values())


def remap_keys(state: dict[str, torch.Tensor], key_map: dict[str, str]) -> dict[str, torch.Tensor]:
    """Replace the first matching prefix of each key (``{"module.": ""}`` strips DataParallel prefixes)."""
    remapped = {}
    for key, value in state.items():
        for prefix, replacement in key_map.items():
            if key.startswith(prefix):
                key = replacement + key[len(prefix):]
                break
        remapped[key] = value
    return remapped


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load with every key and shape checked; errors name the first offending keys."""
    expected = model.state_dict()
    # BatchNorm step counters are bookkeeping that checkpoints older than PyTorch 0.4.1 lack
    state = {**{k: v for k, v in expected.items() if k.endswith("num_batches_tracked") and k not in state}, **state}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ModelError(
            f"weights {source} do not match the model: missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}; fix teacher.key_map or the architecture"
        )
    for key, tensor in expected.items():
        if tensor.shape != state[key].shape:
            raise ModelError(
                f"weights {source}: shape of '{key}' is {tuple(state[key].shape)} in the file but {tuple(tensor.shape)} in the model"
            )
    model.load_state_dict(state, strict=True)


def state_hash(model: nn.Module) -> str:
    """Content hash of a model's weights (independent of where they were loaded from)."""
    digest = hashlib.sha1()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
