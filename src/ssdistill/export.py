"""Ship a distilled student as a folder in timm's Hugging Face Hub layout: ``model.safetensors`` (the timm backbone's
own state dict, classifier removed), ``config.json`` (architecture, model_args, pretrained_cfg with the preprocessing,
and an ``ssdistill`` record of where it came from) and a ``README.md`` model card; optionally ``student.onnx`` checked
against PyTorch with onnxruntime, and an upload to the Hub.

    timm.create_model("local-dir:PATH", pretrained=True)   # or "hf-hub:USER/REPO" once pushed

gives the student's features for images normalised with the mean / std recorded in config.json.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ssdistill._version import __version__

from ssdistill.engine.resume import trained_epochs
from ssdistill.engine.rundir import existing_run_dir
from ssdistill.files import atomic_output, atomic_write_text
from ssdistill.engine.run import load_student_from_run
from ssdistill.errors import ModelError
from ssdistill.methods.registry import METHODS
from ssdistill.modelcard import model_card, push_to_hub as upload
from ssdistill.models.students import Student


def student_config(
    cfg, student: Student, results: dict | None, evaluation: dict | None, checkpoint: Path, member: str = "student",
    resolution: int | None = None, epochs: int | None = None,
) -> dict[str, Any]:
    """config.json: what timm needs (architecture, features, preprocessing) and where the student came from."""
    resolution = resolution or cfg.student.resolution
    numbers: dict[str, Any] = {}
    if results and results.get("knn"):
        numbers["knn"] = {k: {m: v for m, v in row.items() if m in ("top1", "top5")} for k, row in results["knn"].items()}
        numbers["knn_protocol"] = results["protocol"]["knn"]
        numbers["retained_pct"] = results.get("retained_pct")
        numbers["val"] = results["data"]["val"]
    if evaluation and evaluation.get("evaluation"):
        from ssdistill.eval.suite import headline_metrics

        numbers["suite"] = {k: headline_metrics(row) for k, row in evaluation["evaluation"]["models"].items()}
        numbers["suite_retained_pct"] = evaluation["evaluation"]["retained_pct"]
    teacher = cfg.teacher
    return {
        "architecture": student.arch,
        "num_classes": 0,
        "num_features": student.dim,
        "model_args": dict(student.model_args),  # timm passes these to create_model (a ViT's img_size)
        "pretrained_cfg": {
            "input_size": [3, resolution, resolution],
            "interpolation": "bicubic",
            "crop_pct": 0.875,
            "mean": list(student.mean),
            "std": list(student.std),
            "num_classes": 0,
        },
        "ssdistill": {
            "version": __version__,
            "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "checkpoint": str(checkpoint),
            "method": cfg.method.name,
            "teacher": {"name": teacher.name, "weights": teacher.weights, "output": teacher.output},
            "teachers": {name: {"name": t.name, "weights": t.weights, "output": t.output} for name, t in cfg.teachers.items()},
            "member": member,
            "train_data": cfg.data.train,
            "epochs": cfg.trainer.epochs if epochs is None else epochs,  # trained, not planned
            "planned_epochs": cfg.trainer.epochs,
            "seed": cfg.trainer.seed,
            "evaluation": numbers,
        },
    }


WEIGHTS_FILE = "model.safetensors"  # the name timm's local-dir: and hf-hub: loaders look for first


def export_run(
    run: str | Path, checkpoint: str | Path | None = None, output: str | Path | None = None, onnx: bool = False, member: str | None = None,
    allow_unfinished: bool = False, push_to_hub: str | None = None, private: bool = False, licence: str | None = None,
) -> dict[str, Path | str]:
    """Write model.safetensors + config.json + README.md (and student.onnx) of the run's student ``member`` (default:
    its first; a cohort's members by name) to ``output`` (default RUN/export, a cohort's member to RUN/export/<member>);
    with ``push_to_hub`` (a Hub repository, USER/NAME) upload the folder there. Returns the written paths (and the
    repository's URL). A checkpoint that has not trained every planned epoch (a killed or running run) is refused
    unless ``allow_unfinished``; config.json records the epochs really trained. ``licence``: the licence the model
    card gives the student's weights (default ``other``)."""
    run_dir = existing_run_dir(run)
    cfg, student = load_student_from_run(run_dir, checkpoint, member)
    last = Path(checkpoint or run_dir / "checkpoints" / "last.ckpt")
    epochs = trained_epochs(torch.load(last, map_location="cpu", weights_only=False))
    if epochs < cfg.trainer.epochs and not allow_unfinished:
        raise ModelError(
            f"{last} holds {epochs} of the run's {cfg.trainer.epochs} epochs (killed or still running): resume it first "
            f"(ssdistill distill --resume {run_dir}), or export it as it is with --allow-unfinished"
        )
    members = METHODS[cfg.method.name].run_members(cfg)
    member = member or next(iter(members))
    resolution = members[member].resolution
    student.eval()
    # default folder: RUN/export, or RUN/export/<member> for each member of a cohort (so members never overwrite each other)
    out = Path(output) if output else run_dir / "export" / (member if len(members) > 1 else "")
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous().clone() for k, v in student.backbone.state_dict().items()}
    with atomic_output(out / WEIGHTS_FILE) as tmp:
        save_file(weights, str(tmp), metadata={"format": "pt", "architecture": student.arch})
    read = lambda name: json.loads((run_dir / name).read_text()) if (run_dir / name).is_file() else None  # noqa: E731
    results, evaluation = read("results.json"), read("evaluation.json")
    config = student_config(cfg, student, results, evaluation, last, member, resolution, epochs)
    atomic_write_text(out / "config.json", json.dumps(config, indent=2))
    if evaluation and evaluation.get("evaluation"):  # `ssdistill eval` ran after training: its suite is the newer table
        results = {**(results or {}), "evaluation": evaluation["evaluation"]}
    atomic_write_text(out / "README.md", model_card(cfg, config, results, repo=push_to_hub, licence=licence))
    written: dict[str, Path | str] = {"weights": out / WEIGHTS_FILE, "config": out / "config.json", "card": out / "README.md"}
    if onnx:
        written["onnx"] = export_onnx(student, resolution, out / "student.onnx")
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
