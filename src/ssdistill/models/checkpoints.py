"""Reading weight files (.safetensors, .pth, .th, .ckpt) into a flat state dict, with declared
key remapping and strict loading (missing or unexpected keys are errors); writing training checkpoints atomically beside
their path."""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from ssdistill.errors import ModelError, StorageError, short
from ssdistill.files import atomic_output, remedy, write_failure

_NESTED_KEYS = ("state_dict", "model", "model_state_dict", "module")


def load_checkpoint(path: str | Path, setting: str = "teacher.weights"):
    """The object stored in a weights file (.safetensors: a flat state dict); ``setting`` names the option to fix in
    errors. Pickles load with ``weights_only``; argparse namespaces, which DINO / MSN / MoCo checkpoints carry, are allowed."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"weights file {path} not found; set {setting} to an existing .safetensors/.pth file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file for the user
        text = str(exc)
        if "WeightsUnpickler error:" in text:  # torch's safe loader: keep its reason, not its advice to turn safety off
            detail = " ".join(text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0].split())
            extra = "; it pickles Python objects besides tensors: re-save its state_dict" if "global" in detail.lower() else ""
            reason = f"weights-only unpickling: {short(detail)}{extra}"
        else:
            reason = f"{type(exc).__name__}: {short(text)}"
        raise ModelError(f"cannot read weights file {path}: it is neither a PyTorch checkpoint nor a safetensors file ({reason})") from None


def flatten_tensors(value, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of nested dicts, keyed by its dotted path (other values, such as epochs and arguments, are skipped)."""
    if isinstance(value, torch.Tensor):
        return {prefix[:-1]: value}
    flat: dict[str, torch.Tensor] = {}
    if isinstance(value, dict):
        for key, inner in value.items():
            flat.update(flatten_tensors(inner, f"{prefix}{key}."))
    return flat


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat state dict: the file's own, the one nested under state_dict / model / ..., or else every tensor of its
    nested dicts by dotted path (a DINO full checkpoint: ``teacher.backbone.*``, ``teacher.head.*``, ``student.*``)."""
    state = load_checkpoint(path)
    while isinstance(state, dict) and not _is_flat(state):
        inner = next((state[k] for k in _NESTED_KEYS if isinstance(state.get(k), dict)), None)
        if inner is None:
            inner = flatten_tensors(state)
            if not inner:
                raise ModelError(f"weights file {path} holds no tensors (top-level keys: {sorted(state)[:6]})")
        state = inner
    if not isinstance(state, dict):
        raise ModelError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    return state


def _is_flat(state: dict) -> bool:
    return bool(state) and all(isinstance(v, torch.Tensor) for v in state.values())


def remap_keys(state: dict[str, torch.Tensor], key_map: dict[str, str | None]) -> dict[str, torch.Tensor]:
    """Replace the first matching prefix of each key (``{"module.": ""}`` strips DataParallel prefixes); a prefix mapped
    to None drops its keys (``{"module.encoder_q.": "", "": None}`` keeps only a MoCo query encoder)."""
    remapped = {}
    for key, value in state.items():
        for prefix, replacement in key_map.items():
            if key.startswith(prefix):
                key = None if replacement is None else replacement + key[len(prefix) :]
                break
        if key is not None:
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
            raise ModelError(f"weights {source}: shape of '{key}' is {tuple(state[key].shape)} in the file but {tuple(tensor.shape)} in the model")
    model.load_state_dict(state, strict=True)


def state_hash(model: nn.Module) -> str:
    """Content hash of a model's weights (independent of where they were loaded from)."""
    digest = hashlib.sha1()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def tensor_bytes(value) -> int:
    """Bytes of every tensor in nested dicts / lists / tuples (about what ``torch.save`` writes of them)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    return 0


def save_checkpoint_file(checkpoint: dict, path: str | Path) -> None:
    """``torch.save`` to a hidden file beside ``path``, flushed to disk, then renamed into place: a kill leaves the
    previous file whole, and nothing is staged in the system temp folder (Lightning's own writer stages a local file
    in $TMPDIR through fsspec, so a small $TMPDIR failed runs). A full disk, a quota or a read-only folder is one line
    (``StorageError``) naming the folder and about how much the checkpoint needs."""
    path = Path(path)
    try:
        with atomic_output(path) as tmp, open(tmp, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        need = tensor_bytes(checkpoint) or None
        what = f"checkpoint {path.name}"
        message = write_failure(exc, path.parent, what, need)
        if need:
            message = message.replace(f"{what} needs", f"{what} needs about", 1)
        raise StorageError(f"{message}; {remedy(exc)} or set run.dir to another folder") from None
