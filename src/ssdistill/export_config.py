"""The ``config.json`` of an exported student: what timm's own Hub writer (``timm.models._hub.save_config_for_hf``)
writes for the student's backbone, with the preprocessing the run's evaluation really used declared in timm's terms,
plus an ``ssdistill`` record of where the weights came from that holds no local detail (files become names and
sha256 fingerprints, data sets their name and content fingerprint) and rounded numbers.

The evaluation view (``data.views.original_view``) resizes an image's shorter side to round(res / 0.875) px and crops
the centre, but resizes an image whose longer side is at most ``NATIVE_MAX_SIDE`` straight to res x res. timm's eval
transform resizes to floor(res / crop_pct): ``crop_pct_for`` picks the crop_pct that gives the same side, and crop_pct
1.0 with crop_mode ``squash`` is the straight resize; which of the two the export declares is decided from the sizes
of the evaluation's own images (``evaluation_paths``)."""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from torch import nn

from ssdistill.data.datasets import SPLIT_NAMES, TORCHVISION_SPLITS, ImageSource
from ssdistill.data.views import NATIVE_MAX_SIDE
from ssdistill.errors import SsdistillError

EVAL_CROP_PCT = 0.875  # original_view's crop_pct: the evaluation's resize side is round(res / 0.875)
EVAL_INTERPOLATION = "bicubic"  # original_view's interpolation
SIZE_CHECK_LIMIT = 20000  # images of a split whose size is read (evenly spaced beyond that)
# keys of timm's pretrained_cfg that the export sets on purpose (the rest is exactly what timm's writer writes)
DECLARED_KEYS = (
    "input_size",
    "crop_pct",
    "crop_mode",
    "interpolation",
    "mean",
    "std",
    "pool_size",
    "test_input_size",
    "test_crop_pct",
    "license",
    "tag",
)


def crop_pct_for(resolution: int) -> float:
    """The crop_pct (at most 6 decimals) with which timm's floor(res / crop_pct) equals the evaluation's round(res / 0.875):
    the middle of the interval of such values, so that the rounding of the stored number cannot move the side."""
    side = int(round(resolution / EVAL_CROP_PCT))
    for digits in (4, 5, 6):
        pct = round(resolution / (side + 0.5), digits)
        if math.floor(resolution / pct) == side:
            return pct
    raise ValueError(f"no crop_pct reproduces a {side} px resize side at {resolution} px")  # cannot happen for res >= 1


def evaluation_paths(sources: Iterable[ImageSource], limit: int = SIZE_CHECK_LIMIT) -> dict[str, int]:
    """How many images of the evaluation's splits take the centre-crop path (longer side above NATIVE_MAX_SIDE) and how
    many the straight resize; each split's first ``limit`` sizes, evenly spaced beyond that (read from file headers). An
    image whose size cannot be read is left out (counted as ``unreadable`` when there are any)."""
    counts = {"cropped": 0, "resized": 0, "examined": 0, "total": 0}
    unreadable = 0
    for source in sources:
        total = len(source)
        step = max(1, math.ceil(total / limit))
        for index in range(0, total, step):
            try:
                size = source.size(index)
            except (SsdistillError, OSError):  # a damaged image (the run skipped it with data.skip_corrupt)
                unreadable += 1
                continue
            counts["cropped" if max(size) > NATIVE_MAX_SIDE else "resized"] += 1
            counts["examined"] += 1
        counts["total"] += total
    return {**counts, "unreadable": unreadable} if unreadable else counts


def declared_preprocessing(resolution: int, mean, std, counts: dict[str, int] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(timm data config, record): the crop path when most evaluation images took it (or when their sizes are unknown),
    else the straight resize; the record says which images the declared transform reproduces."""
    side = int(round(resolution / EVAL_CROP_PCT))
    cropped, resized = (counts["cropped"], counts["resized"]) if counts else (0, 0)
    crop = not counts or cropped >= resized
    data = {
        "input_size": (3, resolution, resolution),
        "interpolation": EVAL_INTERPOLATION,
        "crop_pct": crop_pct_for(resolution) if crop else 1.0,
        "crop_mode": "center" if crop else "squash",
        "mean": tuple(mean),
        "std": tuple(std),
    }
    examined = cropped + resized
    if not counts:
        reproduces = "unknown: the evaluation images could not be read at export time"
    elif cropped == examined or resized == examined:
        reproduces = "all"
    else:
        reproduces = f"{max(cropped, resized)} of {examined}"
    record = {
        "evaluation_view": f"longer side above {NATIVE_MAX_SIDE} px: shorter side resized to {side} px (round({resolution} / "
        f"{EVAL_CROP_PCT})) and centre crop {resolution} px; otherwise resized to {resolution} x {resolution} px; {EVAL_INTERPOLATION}",
        "declared": "centre crop" if crop else "resize",
        "evaluation_images": dict(counts) if counts else None,
        "reproduces": reproduces,
    }
    return data, record


def timm_hub_config(backbone: nn.Module, data_config: dict[str, Any], path: Path, licence: str) -> dict[str, Any]:
    """Write timm's own config.json for ``backbone`` to ``path`` with ``data_config`` as its preprocessing and return it;
    the source checkpoint's tag and licence are replaced (the weights are the export's, under ``licence``)."""
    from timm.models._hub import save_config_for_hf

    if "data_config" in inspect.signature(save_config_for_hf).parameters:
        save_config_for_hf(backbone, str(path), data_config=data_config)
        config = json.loads(Path(path).read_text())
    else:  # an older timm: its writer takes no data config; the same fields set by hand
        save_config_for_hf(backbone, str(path))
        config = json.loads(Path(path).read_text())
        pretrained = config["pretrained_cfg"]
        if list(pretrained.get("input_size", [])) != list(data_config["input_size"]):
            pretrained["pool_size"] = None
        for key in ("test_input_size", "test_crop_pct", "test_pool_size"):
            pretrained.pop(key, None)
        pretrained.update(data_config)
    pretrained = config["pretrained_cfg"]
    pretrained.pop("tag", None)  # the architecture's default weights' tag: these are not those weights
    pretrained["license"] = licence
    for key in ("input_size", "mean", "std"):
        pretrained[key] = list(pretrained[key])
    return config


def file_digest(path: str | Path) -> str | None:
    """sha256 of a file (None when it cannot be read); a file unchanged since it was last hashed is not read again (an
    export names a teacher's weights in config.json and in the card)."""
    try:
        stat = Path(path).stat()
        return _digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    except OSError:
        return None


@lru_cache(maxsize=32)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_name(spec: str | None) -> tuple[str, str | None]:
    """(data set name, split) of a data spec without its local path: ``/x/imagenette/val`` -> (imagenette, val),
    ``cifar10:test`` -> (cifar10, test), ``/x/lists/train.txt`` -> (lists, train), ``wds:/x/shards/a-{0..9}.tar`` ->
    (shards, None); a folder not named like a split -> (its name, None)."""
    if not spec:
        return "unknown", None
    if spec.startswith("wds:"):
        return Path(spec[len("wds:") :]).parent.name or "shards", None
    name, _, split = spec.partition(":")
    if name.lower() in TORCHVISION_SPLITS and not Path(spec).exists():
        return name.lower(), split or "train"
    path = Path(spec.rstrip("/"))
    stem = path.stem if path.suffix.lower() == ".txt" else path.name
    if stem.lower() in SPLIT_NAMES and path.parent.name:
        return path.parent.name, stem
    return stem or "images", None


def weights_record(weights: str | None) -> dict[str, str] | None:
    """A teacher's weights file as its name and sha256 (never its folder)."""
    if not weights:
        return None
    return {"file": Path(weights).name, "sha256": file_digest(Path(weights).expanduser()) or "unreadable"}


def public_name(name: str) -> str:
    """A model name without a local folder (``local-dir:/x/y`` -> ``local-dir:y``)."""
    return f"local-dir:{Path(name[len('local-dir:') :]).name}" if name.startswith("local-dir:") else name


def rounded(value: Any) -> Any:
    """Numbers for people: floats of 1 or more to 2 decimals, smaller ones to 4 significant digits, recursively."""
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v) for v in value]
    if isinstance(value, float) and math.isfinite(value):
        return round(value, 2) if abs(value) >= 1 else float(f"{value:.4g}")
    return value
