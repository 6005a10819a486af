"""Ship a distilled student as a folder in timm's Hugging Face Hub layout: ``model.safetensors`` (the timm backbone's
own state dict, classifier removed), ``config.json`` (what timm's own Hub writer writes, with the run's evaluation
preprocessing declared, plus an ``ssdistill`` record of where it came from: export_config.py) and a ``README.md`` model
card (modelcard.py); optionally ``student.onnx`` checked against PyTorch with onnxruntime, and an upload to the Hub.

    model = timm.create_model("local-dir:PATH", pretrained=True)   # or "hf-hub:USER/REPO" once pushed
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))

gives the student's features as the run's evaluation measured them. A folder holding files an export did not write
is refused unless ``overwrite``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ssdistill._version import __version__

from ssdistill.engine.module import student_label
from ssdistill.engine.provider import open_split
from ssdistill.engine.resume import run_checkpoint, trained_epochs
from ssdistill.engine.rundir import busy, existing_run_dir
from ssdistill.errors import ModelError, SsdistillError
from ssdistill.export_config import (
    dataset_name, declared_preprocessing, evaluation_paths, file_digest, public_name, rounded, timm_hub_config, weights_record,
)
from ssdistill.files import atomic_output, atomic_write_text
from ssdistill.engine.run import evaluation_split, load_student_from_run, train_source
from ssdistill.methods.registry import METHODS
from ssdistill.modelcard import licence_fields, model_card, push_to_hub as upload
from ssdistill.models.students import Student

WEIGHTS_FILE = "model.safetensors"  # the name timm's local-dir: and hf-hub: loaders look for first
EXPORT_FILES = (WEIGHTS_FILE, "config.json", "README.md", "student.onnx")  # every file an export writes


def run_id(run_dir: Path) -> str:
    """Which run an export folder holds, without naming its path: a digest of the run folder and its config."""
    config = run_dir / "config.yaml"
    text = config.read_bytes() if config.is_file() else b""
    return hashlib.sha256(str(run_dir.resolve()).encode() + b"\0" + text).hexdigest()[:16]


def _ours(name: str) -> bool:
    """One of an export's files, or the hidden staging copy of one that a killed export left (files.atomic_output)."""
    return name in EXPORT_FILES or any(name.startswith(f".{f}.") and name.endswith(".tmp") for f in EXPORT_FILES)


def check_output_folder(out: Path, identity: str, overwrite: bool) -> None:
    """Refuse to write into a folder holding files this export did not write, unless ``overwrite``: an empty or new
    folder, or one holding only a previous export of the same run, is fine (those files are replaced)."""
    if out.exists() and not out.is_dir():
        raise ModelError(f"the export folder {out} is a file: give --output a folder (new or empty)")
    if overwrite or not out.is_dir():
        return
    present = sorted(p.name for p in out.iterdir())
    foreign = [name for name in present if not _ours(name)]
    if foreign:
        listed = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ModelError(
            f"the export folder {out} already holds files that export did not write ({listed}): export into a new or empty "
            "folder with --output, or pass --overwrite to write into it anyway"
        )
    if present:
        try:
            previous = json.loads((out / "config.json").read_text())["ssdistill"]["run_id"]
        except (OSError, ValueError, KeyError, TypeError):
            previous = None
        if previous != identity:
            raise ModelError(
                f"the export folder {out} holds the export of another run: export into a new or empty folder with --output, "
                "or pass --overwrite to replace it"
            )


def _teacher(teacher) -> dict[str, Any]:
    return {"name": public_name(teacher.name), "output": teacher.output, "weights": weights_record(teacher.weights)}


def _figures(results: dict | None, evaluation: dict | None, label: str) -> dict[str, Any]:
    """The evaluation figures of config.json: k-NN top-1 / top-5 of every row under the run's protocol, the full suite's
    headline numbers (``ssdistill eval``'s when it ran after training, else the run's own), the retained share and the
    evaluation data set (name and split, no path)."""
    numbers: dict[str, Any] = {"row": label}
    if results and results.get("knn"):
        numbers["knn"] = {k: {m: v for m, v in row.items() if m in ("top1", "top5")} for k, row in results["knn"].items()}
        numbers["knn_protocol"] = {k: results["protocol"]["knn"][k] for k in ("k", "temperature")}
        numbers["retained_pct"] = results.get("retained_pct")
    suite = (evaluation or {}).get("evaluation") or (results or {}).get("evaluation")
    if suite:
        from ssdistill.eval.suite import headline_metrics

        numbers["suite"] = {k: headline_metrics(row) for k, row in suite["models"].items()}
        numbers["suite_retained_pct"] = suite["retained_pct"]
    record = evaluation if (evaluation or {}).get("evaluation") else results
    if record and (record.get("data") or {}).get("val"):
        name, split = dataset_name(record["data"]["val"])
        numbers["data"] = {"name": name, "split": split or "val"}
    return numbers


def _evaluation_sources(cfg, record: dict | None) -> list:
    """The k-NN memory and evaluation splits the recorded figures were measured on (those the run's config names when
    there is no record yet)."""
    data = (record or {}).get("data") or {}
    memory_spec = data.get("knn_train") or data.get("train") or cfg.data.knn_train or cfg.data.train
    if memory_spec == (cfg.data.knn_train or cfg.data.train):
        memory = open_split(cfg, cfg.data.knn_train) if cfg.data.knn_train else train_source(cfg)
    else:
        memory = open_split(cfg, memory_spec)
    val = data.get("val")
    own = evaluation_split(cfg)
    query = own[1] if own and (val is None or val == own[0]) else open_split(cfg, val) if val else None
    return [memory] + ([query] if query is not None else [])


def student_config(
    cfg, student: Student, results: dict | None, evaluation: dict | None, path: Path, *, identity: str, member: str,
    label: str, resolution: int, epochs: int, checkpoint: Path, licence: str | None = None,
) -> dict[str, Any]:
    """Write config.json to ``path``: timm's own Hub config of the student's backbone (data.views' evaluation view as its
    preprocessing) plus the ``ssdistill`` record (no local path; numbers rounded); returns it."""
    record = evaluation if evaluation and evaluation.get("knn") else results
    try:
        counts = evaluation_paths(_evaluation_sources(cfg, record))
    except (SsdistillError, OSError):  # the data moved since the run: the figures' images cannot be checked
        counts = None
    data_config, preprocessing = declared_preprocessing(resolution, student.mean, student.std, counts)
    config = timm_hub_config(student.backbone, data_config, path, licence_fields(licence)[0])
    train = (results or {}).get("data") or {}
    name, split = dataset_name(train.get("train") or cfg.data.train)
    config["ssdistill"] = rounded({
        "version": __version__,
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_id": identity,
        "method": cfg.method.name,
        "member": member,
        "feature_dim": student.dim,  # the width of the features the model returns (timm's num_features may be pre-head)
        "checkpoint": {"file": checkpoint.name, "epochs": epochs},
        "weights_sha256": None,  # filled in by export_run once model.safetensors is written
        "teacher": _teacher(cfg.teacher),
        "teachers": {label_: _teacher(t) for label_, t in cfg.teachers.items()},
        "train_data": {"name": name, "split": split, "fingerprint": train.get("train_fingerprint"), "images": train.get("train_size")},
        "epochs": epochs,  # trained, not planned
        "planned_epochs": cfg.trainer.epochs,
        "steps": (results or {}).get("steps"),
        "seed": cfg.trainer.seed,
        "preprocessing": preprocessing,
        "evaluation": _figures(results, evaluation, label),
    })
    return config


def export_run(
    run: str | Path, checkpoint: str | Path | None = None, output: str | Path | None = None, onnx: bool = False, member: str | None = None,
    allow_unfinished: bool = False, push_to_hub: str | None = None, private: bool = False, licence: str | None = None,
    overwrite: bool = False,
) -> dict[str, Path | str]:
    """Write model.safetensors + config.json + README.md (and student.onnx) of the run's student ``member`` (default:
    its first; a cohort's members by name) to ``output`` (default RUN/export, a cohort's member to RUN/export/<member>);
    with ``push_to_hub`` (a Hub repository, USER/NAME) upload the folder there. Returns the written paths (and the
    repository's URL). A checkpoint that has not trained every planned epoch (a killed or running run) is refused
    unless ``allow_unfinished``; config.json records the epochs really trained. ``licence``: the licence the model
    card gives the student's weights (default ``other``). A folder holding other files than a previous export of
    the same run is refused unless ``overwrite``."""
    run_dir = existing_run_dir(run)
    last, state = run_checkpoint(run_dir, checkpoint)  # the newest readable checkpoint unless one is named
    cfg, student = load_student_from_run(run_dir, last, member)
    epochs = trained_epochs(state)
    if epochs < cfg.trainer.epochs and not allow_unfinished:
        held = busy(run_dir)
        raise ModelError(
            f"{held}: export it once it has finished, or its checkpoint as it is now with --allow-unfinished" if held else
            f"{last} holds {epochs} of the run's {cfg.trainer.epochs} epochs (killed or still running): resume it first "
            f"(ssdistill distill --resume {run_dir}), or export it as it is with --allow-unfinished"
        )
    members = METHODS[cfg.method.name].run_members(cfg)
    member = member or next(iter(members))
    resolution = members[member].resolution
    student.eval()
    # default folder: RUN/export, or RUN/export/<member> for each member of a cohort (so members never overwrite each other)
    out = Path(output) if output else run_dir / "export" / (member if len(members) > 1 else "")
    identity = run_id(run_dir)
    check_output_folder(out, identity, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous().clone() for k, v in student.backbone.state_dict().items()}
    with atomic_output(out / WEIGHTS_FILE) as tmp:
        save_file(weights, str(tmp), metadata={"format": "pt", "architecture": student.arch})
    read = lambda name: json.loads((run_dir / name).read_text()) if (run_dir / name).is_file() else None  # noqa: E731
    results, evaluation = read("results.json"), read("evaluation.json")
    with atomic_output(out / "config.json") as tmp:
        config = student_config(
            cfg, student, results, evaluation, tmp, identity=identity, member=member, label=student_label(member),
            resolution=resolution, epochs=epochs, checkpoint=last, licence=licence,
        )
        config["ssdistill"]["weights_sha256"] = file_digest(out / WEIGHTS_FILE)
        tmp.write_text(json.dumps(config, indent=2) + "\n")
    if evaluation and evaluation.get("evaluation"):  # `ssdistill eval` ran after training: its suite is the newer table
        results = {**(results or {}), "evaluation": evaluation["evaluation"], "machine": evaluation.get("machine")}
    atomic_write_text(out / "README.md", model_card(cfg, config, results, repo=push_to_hub, licence=licence))
    written: dict[str, Path | str] = {"weights": out / WEIGHTS_FILE, "config": out / "config.json", "card": out / "README.md"}
    if onnx:
        written["onnx"] = export_onnx(student, resolution, out / "student.onnx")
    else:
        (out / "student.onnx").unlink(missing_ok=True)  # a previous export's: it would not match these weights
    if push_to_hub:
        written["hub"] = upload(out, push_to_hub, private=private)
    return written


def export_onnx(student: Student, resolution: int, path: Path, tolerance: float = 1e-4) -> Path:
    """ONNX of the whole student (normalisation included: input images in [0, 1]), dynamic batch, checked with
    onnxruntime against PyTorch on random images."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ModelError("--onnx needs onnx and onnxruntime: pip install 'ssdistill[onnx]'") from exc
    images = torch.rand(2, 3, resolution, resolution)
    with atomic_output(path) as tmp:  # kept only if it passes the check
        torch.onnx.export(
            student, (images,), str(tmp), input_names=["images"], output_names=["features"],
            dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}}, dynamo=False,
        )
        session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        check = torch.rand(3, 3, resolution, resolution)
        with torch.no_grad():
            expected = student(check).numpy()
        got = session.run(None, {"images": check.numpy()})[0]
        error = float(abs(got - expected).max())
        if error > tolerance * max(1.0, float(abs(expected).max())):
            raise ModelError(f"the ONNX export differs from PyTorch by {error:.2e}; please report this architecture")
    return path
