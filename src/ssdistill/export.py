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
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ssdistill._version import __version__
from ssdistill.data.datasets import ImageSource, open_images, seeded_subset
from ssdistill.engine.resume import SAFE_TO_CHANGE, flatten
from ssdistill.engine.rundir import busy, existing_run_dir
from ssdistill.engine.trackers import send_files
from ssdistill.errors import ModelError, SsdistillError
from ssdistill.export_config import (
    dataset_name,
    declared_preprocessing,
    evaluation_paths,
    file_digest,
    public_name,
    rounded,
    timm_hub_config,
    weights_record,
)
from ssdistill.files import atomic_output, atomic_write_text
from ssdistill.labels import student_label, teacher_label
from ssdistill.methods.registry import METHODS
from ssdistill.modelcard import licence_fields, model_card
from ssdistill.modelcard import push_to_hub as upload
from ssdistill.models.students import Student
from ssdistill.report.html import current_results, read_record
from ssdistill.runs.load import load_run

WEIGHTS_FILE = "model.safetensors"  # the name timm's local-dir: and hf-hub: loaders look for first
EXPORT_FILES = (WEIGHTS_FILE, "config.json", "README.md", "student.onnx")  # every file an export writes
GPU_ACCELERATORS = ("auto", "gpu", "cuda")  # distributed.compute_device: these evaluate on the GPU when there is one

log = logging.getLogger(__name__)


def run_id(run_dir: Path, cfg) -> str:
    """Which run an export folder holds, without naming its path: a digest of the run folder's name and of the config
    that a resume keeps unless forced (all but ``SAFE_TO_CHANGE`` and ``trainer.epochs``, which a resume may raise), so
    it stays the same across resumes, moves and copies of the run."""
    kept = {k: v for k, v in flatten(cfg.to_dict()).items() if not k.startswith(SAFE_TO_CHANGE) and k != "trainer.epochs"}
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(Path(run_dir).resolve().name.encode() + b"\0" + text.encode()).hexdigest()[:16]


def _ours(name: str) -> bool:
    """One of an export's files, or the hidden staging copy of one that a killed export left (files.atomic_output)."""
    return name in EXPORT_FILES or any(name.startswith(f".{f}.") and name.endswith(".tmp") for f in EXPORT_FILES)


def check_output_folder(out: Path, identity: str, overwrite: bool) -> None:
    """Refuse to write into a folder holding files this export did not write, unless ``overwrite``: an empty or new
    folder, or one holding only export files (a previous export of the same run, or what a killed export left without
    its config.json), is fine (those files are replaced)."""
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
    try:  # refused only when a readable config.json names another run
        previous = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        return
    recorded = previous.get("ssdistill") if isinstance(previous, dict) else None
    if not isinstance(recorded, dict) or recorded.get("run_id") != identity:
        raise ModelError(
            f"the export folder {out} holds the export of another run (or one written by another ssdistill version): export into "
            "a new or empty folder with --output, or pass --overwrite to replace it"
        )


def run_records(run_dir: Path) -> tuple[dict | None, dict | None, bool]:
    """(results.json, evaluation.json, whether results.json is of an older format) of the run, None for a missing one
    (and for an older results.json); a damaged record is one line naming it (report.html's reader)."""
    results = evaluation = None
    older = False
    if (run_dir / "results.json").is_file():
        results = read_record(
            run_dir / "results.json",
            f"remove it and evaluate the run with `ssdistill eval {run_dir}` (the export then takes that evaluation's figures)",
        )
        if not current_results(results):
            results, older = None, True
    if (run_dir / "evaluation.json").is_file():
        evaluation = read_record(run_dir / "evaluation.json", f"remove it, or evaluate the run again with `ssdistill eval {run_dir}`")
    return results, evaluation, older


def figures_source(results: dict | None, evaluation: dict | None, older: bool, step: int | None) -> tuple[dict | None, str | None, str | None]:
    """(record, its file name, None) of the evaluation that measured the exported checkpoint (its step is the
    checkpoint's global_step): evaluation.json (``ssdistill eval``, the newer) when it did, else results.json when the
    run ended at that checkpoint; else (None, None, why there are no figures). All the figures of an export come from
    this one record."""
    if evaluation and evaluation.get("step") == step and evaluation.get("knn"):
        return evaluation, "evaluation.json", None
    if results and results.get("steps") == step and results.get("knn"):
        return results, "results.json", None
    if results and results.get("steps") == step:
        return None, None, "the run's evaluation has no k-NN figures (no labelled evaluation split)"
    measured = [
        f"{name} step {record[key]}" if record.get(key) is not None else f"{name} no step recorded"
        for name, record, key in (("results.json", results, "steps"), ("evaluation.json", evaluation, "step"))
        if record
    ]
    if measured:
        return None, None, f"the run's evaluations measured other checkpoints ({', '.join(measured)}), not this one (step {step})"
    if older:
        return None, None, "the run's results.json was written by an older ssdistill"
    return None, None, "the run has not been evaluated"


def _suite_protocol(suite: dict | None) -> dict[str, Any] | None:
    """The primary k-NN protocol of a full suite: its rows' first (``runs.evaluation`` puts the primary first)."""
    for row in ((suite or {}).get("models") or {}).values():
        for name in row.get("knn") or {}:
            k, temperature = name[1:].split("_t")
            return {"k": int(k), "temperature": float(temperature)}
    return None


def evaluated_on(record: dict, source: str, accelerator: str | None = None) -> str | None:
    """``gpu`` or ``cpu``: what the record's figures were measured on; None when the record does not say. A recorded
    device counts; else results.json's evaluation ran on the run's ``trainer.accelerator`` and ``ssdistill eval`` on
    ``auto`` (distributed.compute_device), the GPU when the recorded machine had one."""
    machine = record.get("machine") if isinstance(record.get("machine"), dict) else None
    device = record.get("device") or (machine or {}).get("device")
    if device:
        return "gpu" if str(device).split(":")[0] in ("cuda", "gpu") else "cpu"
    if machine is None:
        return None
    if source == "evaluation.json":
        accelerator = "auto"
    else:
        accelerator = ((record.get("config") or {}).get("trainer") or {}).get("accelerator") or accelerator
    if accelerator is None:
        return None
    return "gpu" if machine.get("gpu") and accelerator in GPU_ACCELERATORS else "cpu"


def figures_record(cfg, record: dict, source: str, label: str) -> dict[str, Any]:
    """The figures' record as config.json and the card read it (results.json's shape): its k-NN protocol (a suite's
    when the record has none), the retained share (from its k-NN table when it has none) and the device it measured on."""
    figures = dict(record)
    protocol = ((record.get("protocol") or {}).get("knn")) or _suite_protocol(record.get("evaluation"))
    figures["protocol"] = {"knn": protocol} if protocol else {}
    knn = record.get("knn") or {}
    reference = teacher_label(cfg.primary_teacher)
    if figures.get("retained_pct") is None and (knn.get(reference) or {}).get("top1") and "top1" in (knn.get(label) or {}):
        figures["retained_pct"] = 100.0 * knn[label]["top1"] / knn[reference]["top1"]
    figures["evaluated_on"] = evaluated_on(record, source, cfg.trainer.accelerator)
    figures["figures_file"] = source
    return figures


def _teacher(teacher) -> dict[str, Any]:
    return {"name": public_name(teacher.name), "output": teacher.output, "weights": weights_record(teacher.weights)}


def _figures(figures: dict | None, label: str, step: int | None, missing: str | None) -> dict[str, Any]:
    """The evaluation figures of config.json, all from one record (the one that measured this checkpoint): k-NN top-1 /
    top-5 of every row under the run's protocol, the full suite's headline numbers when it ran, the retained share and
    the evaluation data set (name and split, no path); without such a record, why there are none."""
    numbers: dict[str, Any] = {"row": label, "step": step}
    if figures is None:
        numbers["missing"] = missing
        return numbers
    numbers["source"] = figures["figures_file"]
    numbers["knn"] = {k: {m: v for m, v in row.items() if m in ("top1", "top5")} for k, row in figures["knn"].items()}
    protocol = (figures.get("protocol") or {}).get("knn") or {}
    numbers["knn_protocol"] = {k: protocol[k] for k in ("k", "temperature") if k in protocol} or None
    numbers["retained_pct"] = figures.get("retained_pct")
    suite = figures.get("evaluation")
    if suite:
        from ssdistill.eval.suite import headline_metrics

        numbers["suite"] = {k: headline_metrics(row) for k, row in suite["models"].items()}
        numbers["suite_retained_pct"] = suite.get("retained_pct")
    if (figures.get("data") or {}).get("val"):
        name, split = dataset_name(figures["data"]["val"])
        numbers["data"] = {"name": name, "split": split or "val"}
    return numbers


def census_sources(cfg, record: dict | None) -> list[ImageSource]:
    """The k-NN memory and evaluation splits the figures were measured on (those the run's config names when there
    are no figures), opened without ``data.skip_corrupt``: the census reads image headers (an unreadable one is left
    out, evaluation_paths), so it decodes no image."""

    def open_(spec: str) -> ImageSource:
        return open_images(spec, cfg.data.root, cfg.data.download)

    method = METHODS[cfg.method.name]
    data = (record or {}).get("data") or {}
    own_memory = cfg.data.knn_train or cfg.data.train
    memory_spec = data["knn_train"] if "knn_train" in data else data.get("train")  # evaluation.json: "train" is its memory
    if memory_spec is not None and memory_spec != own_memory:
        memory = open_(memory_spec)
    elif cfg.data.knn_train:
        memory = open_(cfg.data.knn_train)
    else:  # runs.assemble.train_source without skip_corrupt
        own = method.training_source(cfg, open_)
        memory = seeded_subset(own if own is not None else open_(cfg.data.train), cfg.data.train_subset, cfg.trainer.seed)
    val = data.get("val")
    if val is not None and val not in (cfg.data.val, f"{cfg.method.name} evaluation split"):  # runs.assemble.evaluation_split's name
        query = open_(val)
    elif cfg.data.val:
        query = open_(cfg.data.val)
    else:  # runs.assemble.evaluation_split without skip_corrupt: the method's own evaluation split, if any
        query = method.evaluation_source(cfg, open_)
    return [memory] + ([query] if query is not None else [])


def student_config(
    cfg,
    student: Student,
    figures: dict | None,
    results: dict | None,
    path: Path,
    *,
    identity: str,
    member: str,
    label: str,
    resolution: int,
    epochs: int,
    step: int | None,
    checkpoint: Path,
    missing: str | None = None,
    licence: str | None = None,
) -> dict[str, Any]:
    """Write config.json to ``path``: timm's own Hub config of the student's backbone (data.views' evaluation view as its
    preprocessing) plus the ``ssdistill`` record (no local path; numbers rounded); returns it. ``figures``: the record
    that measured this checkpoint (figures_record) or None (``missing`` says why); ``results``: the run's results.json."""
    try:
        counts = evaluation_paths(census_sources(cfg, figures))
    except (SsdistillError, OSError):  # the data moved since the run: the figures' images cannot be checked
        counts = None
    data_config, preprocessing = declared_preprocessing(resolution, student.mean, student.std, counts)
    config = timm_hub_config(student.backbone, data_config, path, licence_fields(licence)[0])
    train = (results or {}).get("data") or {}
    name, split = dataset_name(train.get("train") or cfg.data.train)
    config["ssdistill"] = rounded(
        {
            "version": __version__,
            "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "run_id": identity,
            "method": cfg.method.name,
            "member": member,
            "feature_dim": student.dim,  # the width of the features the model returns (timm's num_features may be pre-head)
            "checkpoint": {"file": checkpoint.name, "epochs": epochs, "step": step},
            "weights_sha256": None,  # filled in by export_run once model.safetensors is written
            "teacher": _teacher(cfg.teacher),
            "teachers": {label_: _teacher(t) for label_, t in cfg.teachers.items()},
            "train_data": {"name": name, "split": split, "fingerprint": train.get("train_fingerprint"), "images": train.get("train_size")},
            "epochs": epochs,  # trained, not planned
            "planned_epochs": cfg.trainer.epochs,
            "steps": step,  # of the exported checkpoint
            "seed": cfg.trainer.seed,
            "preprocessing": preprocessing,
            "evaluation": _figures(figures, label, step, missing),
        }
    )
    return config


def export_run(
    run: str | Path,
    checkpoint: str | Path | None = None,
    output: str | Path | None = None,
    onnx: bool = False,
    member: str | None = None,
    allow_unfinished: bool = False,
    push_to_hub: str | None = None,
    private: bool = False,
    licence: str | None = None,
    overwrite: bool = False,
) -> dict[str, Path | str]:
    """Write model.safetensors + config.json + README.md (and student.onnx) of the run's student ``member`` (default:
    its first; a cohort's members by name) to ``output`` (default RUN/export, a cohort's member to RUN/export/<member>);
    with ``push_to_hub`` (a Hub repository, USER/NAME) upload the folder there. Returns the written paths (and the
    repository's URL). A checkpoint that has not trained every planned epoch (a killed or running run) is refused
    unless ``allow_unfinished``; config.json records the epochs really trained. ``licence``: the licence the model
    card gives the student's weights (default ``other``). A folder holding other files than a previous export of
    the same run is refused unless ``overwrite``. The folder also goes to the run's MLflow and W&B runs (``run.loggers``),
    under ``export/``."""
    run_dir = existing_run_dir(run)
    loaded = load_run(run_dir, checkpoint, [member], classifiers=False)  # the newest readable checkpoint unless one is named
    cfg, last, epochs = loaded.cfg, loaded.checkpoint, loaded.epochs
    member = member or next(iter(loaded.students))
    student = loaded.students[member]
    if epochs < cfg.trainer.epochs and not allow_unfinished:
        held = busy(run_dir)
        raise ModelError(
            f"{held}: export it once it has finished, or its checkpoint as it is now with --allow-unfinished"
            if held
            else f"{last} holds {epochs} of the run's {cfg.trainer.epochs} epochs (killed or still running): resume it first "
            f"(ssdistill distill --resume {run_dir}), or export it as it is with --allow-unfinished"
        )
    members = loaded.method.run_members(cfg)
    resolution = members[member].resolution
    student.eval()
    # default folder: RUN/export, or RUN/export/<member> for each member of a cohort (so members never overwrite each other)
    out = Path(output) if output else run_dir / "export" / (member if len(members) > 1 else "")
    identity = run_id(run_dir, cfg)
    check_output_folder(out, identity, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous().clone() for k, v in student.backbone.state_dict().items()}
    with atomic_output(out / WEIGHTS_FILE) as tmp:
        save_file(weights, str(tmp), metadata={"format": "pt", "architecture": student.arch})
    step, label = loaded.step, student_label(member)
    results, evaluation, older = run_records(run_dir)
    record, source, missing = figures_source(results, evaluation, older, step)
    figures = figures_record(cfg, record, source, label) if record else None
    if figures is None:  # the card says why (without local paths), and so does a warning
        named = checkpoint is not None
        log.warning(
            "the export of %s carries no evaluation figures: %s; `ssdistill eval %s%s` measures them, then export again",
            last,
            missing,
            run_dir,
            f" --checkpoint {last}" if named else "",
        )
        missing = f"{missing}; `ssdistill eval RUN{f' --checkpoint {last.name}' if named else ''}` measures them"
    with atomic_output(out / "config.json") as tmp:
        config = student_config(
            cfg,
            student,
            figures,
            results,
            tmp,
            identity=identity,
            member=member,
            label=label,
            resolution=resolution,
            epochs=epochs,
            step=step,
            checkpoint=last,
            missing=missing,
            licence=licence,
        )
        config["ssdistill"]["weights_sha256"] = file_digest(out / WEIGHTS_FILE)
        tmp.write_text(json.dumps(config, indent=2) + "\n")
    card_record = {**(figures or {}), **{key: (results or {}).get(key, []) for key in ("deviations", "approximations")}}
    atomic_write_text(out / "README.md", model_card(cfg, config, card_record, repo=push_to_hub, licence=licence))
    written: dict[str, Path | str] = {"weights": out / WEIGHTS_FILE, "config": out / "config.json", "card": out / "README.md"}
    if onnx:
        written["onnx"] = export_onnx(student, resolution, out / "student.onnx")
    else:
        (out / "student.onnx").unlink(missing_ok=True)  # a previous export's: it would not match these weights
    if push_to_hub:
        written["hub"] = upload(out, push_to_hub, private=private)
    # the export into the run's MLflow / W&B runs (run.loggers), under export/ (export/<member> for a cohort's member)
    send_files(cfg, run_dir, [out], "export" if len(members) == 1 else f"export/{member}")
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
            student,
            (images,),
            str(tmp),
            input_names=["images"],
            output_names=["features"],
            dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
            dynamo=False,
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
