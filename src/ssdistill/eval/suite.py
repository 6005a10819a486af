"""The evaluation of several models side by side on one labelled train split (memory / probe training) and one
evaluation split: weighted k-NN under each protocol and, in the full suite, linear probe, few-shot probes, k-means
clustering and a 2-D PCA map of the evaluation features for the report; always parameters, FLOPs and images/s, and
each model's alignment with the reference teacher's features (linear CKA, dCor²). The k-NN-only evaluation is the
same function with the other parts switched off (``SuiteOptions.knn_only``).

Each model's features are extracted once per split (and kept on disk under ``feature_dir`` when given, keyed by
the weights, the view and the images), then every metric reads them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ssdistill.data.datasets import ImageSource
from ssdistill.eval.alignment import teacher_alignment
from ssdistill.eval.classes import align_classes
from ssdistill.eval.clustering import kmeans_clustering
from ssdistill.eval.features import extract_features, model_flops, model_throughput
from ssdistill.eval.knn import knn_accuracy
from ssdistill.eval.linear import LINEAR_PROTOCOL, few_shot, linear_probe
from ssdistill.files import atomic_output
from ssdistill.models.checkpoints import state_hash

log = logging.getLogger("ssdistill")

KNN_PROTOCOLS = ((20, 0.07), (200, 0.1))  # (k, T): Wu et al. / DINO-style and the InstDisc-style protocol


def protocol_name(k: int, temperature: float) -> str:
    return f"k{k}_t{temperature:g}"


@dataclass
class Candidate:
    """A model to evaluate, the view it sees, and (optionally) its features on the memory / query sets, already
    computed (a teacher's, from the cache)."""

    label: str
    model: nn.Module
    view: Callable
    resolution: int
    memory_features: torch.Tensor | None = None
    query_features: torch.Tensor | None = None
    classifier: nn.Module | None = None  # a classifier the method trained on the pooled features: its top-1 is scored


@dataclass
class SuiteOptions:
    knn: tuple[tuple[int, float], ...] = KNN_PROTOCOLS
    linear: bool = True
    few_shot: bool = True
    clustering: bool = True
    embedding_points: int = 1000  # val samples in the 2-D map (0: none)
    seed: int = 0
    alignment_seed: int | None = None  # the rows of the alignment subset (None: seed)
    shared_classes: bool = False  # score only the evaluation classes the memory has (eval.shared_classes) instead of refusing
    split_names: tuple[str, str] = ("the k-NN memory split", "the evaluation split")  # (memory, query) as messages name them

    @classmethod
    def knn_only(cls, k: int, temperature: float) -> SuiteOptions:
        """One k-NN protocol and nothing else; the alignment subset is that of seed 0 whatever the run's seed."""
        return cls(knn=((k, temperature),), linear=False, few_shot=False, clustering=False, embedding_points=0, alignment_seed=0)


def _features(candidate: Candidate, source: ImageSource, split: str, feature_dir, batch_size, num_workers, device) -> torch.Tensor:
    given = candidate.memory_features if split == "train" else candidate.query_features
    if given is not None:
        return given.float()
    path = None
    view_key = getattr(candidate.view, "description", None)  # views without a stable description are not kept on disk
    if feature_dir is not None and view_key is not None:
        key = hashlib.sha1(f"{state_hash(candidate.model)}|{view_key}|{source.fingerprint()}".encode()).hexdigest()[:16]
        path = feature_dir / f"{candidate.label}-{split}-{key}.pt"
        if path.is_file():
            return torch.load(path, weights_only=True)
    features = extract_features(candidate.model, source, candidate.view, batch_size, num_workers, device, f"{candidate.label} {split}")
    if path is not None:
        with atomic_output(path) as tmp:
            torch.save(features, tmp)
    return features


def pca_map(features: torch.Tensor, labels: torch.Tensor, points: int, seed: int) -> dict:
    """2-D PCA of L2-normalised features on a seeded subset: {"x": [...], "y": [...], "label": [...]}."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(features), generator=generator)[:points].sort().values
    x = torch.nn.functional.normalize(features[rows].float(), dim=1)
    x = x - x.mean(0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    xy = x @ v[:2].T
    xy = xy / xy.abs().max().clamp_min(1e-12)
    return {"method": "pca", "x": xy[:, 0].tolist(), "y": xy[:, 1].tolist(), "label": labels[rows].tolist()}


def evaluate_suite(
    candidates: list[Candidate],
    memory: ImageSource,
    query: ImageSource,
    options: SuiteOptions | None = None,
    batch_size: int = 256,
    num_workers: int = 2,
    device: torch.device | str = "cpu",
    feature_dir=None,
    reference: str = "teacher",
    student: str = "student",
) -> dict:
    """{"models": {label: metrics}, "retained_pct": {metric: student / teacher x 100}, "protocols": ...}; every model's
    ``teacher_alignment`` is with the candidate labelled ``reference``, and ``retained_pct`` is ``student``'s share of
    it."""
    options = options or SuiteOptions()
    if memory.labels is None or query.labels is None:
        raise ValueError("evaluation needs labelled train and evaluation splits (class sub-folders)")
    # the evaluation split's labels in the memory's class ids, matched by name (eval/classes.py); features a candidate
    # brings for the whole evaluation split (a cached teacher's) keep the scored rows only
    classes = align_classes(memory, query, options.shared_classes, *options.split_names, k=options.knn[0][0])
    query = classes.query
    candidates = [dataclasses.replace(c, query_features=classes.rows(c.query_features)) for c in candidates]
    train_labels, eval_labels = torch.tensor(memory.labels), torch.tensor(query.labels)
    models: dict[str, dict] = {}
    evaluation_features: dict[str, torch.Tensor] = {}
    for candidate in candidates:
        train = _features(candidate, memory, "train", feature_dir, batch_size, num_workers, device)
        evaluation = _features(candidate, query, "val", feature_dir, batch_size, num_workers, device)
        row: dict = {"knn": {}}
        for k, temperature in options.knn:
            row["knn"][protocol_name(k, temperature)] = knn_accuracy(train, train_labels, evaluation, eval_labels, k, temperature, device=device)
        if candidate.classifier is not None:
            row["classifier"] = classifier_accuracy(candidate.classifier, evaluation, eval_labels)
        if options.linear:
            log.info("linear probe: %s", candidate.label)
            row["linear"] = linear_probe(train, train_labels, evaluation, eval_labels, seed=options.seed)
        if options.few_shot:
            row["few_shot"] = few_shot(train, train_labels, evaluation, eval_labels, seed=options.seed)
        if options.clustering:
            row["clustering"] = kmeans_clustering(evaluation, eval_labels, seed=options.seed)
        if options.embedding_points:
            row["embedding"] = pca_map(evaluation, eval_labels, options.embedding_points, options.seed)
        row["params_m"] = sum(p.numel() for p in candidate.model.parameters()) / 1e6
        row["gflops"] = model_flops(candidate.model.to(device), candidate.resolution)
        row["images_per_s"] = model_throughput(candidate.model, candidate.resolution, device=device)
        row["resolution"] = candidate.resolution
        row["feature_dim"] = int(train.shape[1])
        models[candidate.label] = row
        evaluation_features[candidate.label] = evaluation
    if reference in evaluation_features:  # label-free: how much of the teacher's geometry each model holds
        seed = options.seed if options.alignment_seed is None else options.alignment_seed
        for label, features in evaluation_features.items():
            if label != reference:
                models[label]["teacher_alignment"] = teacher_alignment(features, evaluation_features[reference], seed=seed)
    return {
        "protocols": {"knn": [protocol_name(k, t) for k, t in options.knn], "linear": LINEAR_PROTOCOL},
        "classes": classes.record,
        "models": models,
        "retained_pct": retained(models, reference, student),
    }


@torch.no_grad()
def classifier_accuracy(classifier: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Top-1 / top-5 (percent) of a trained classifier on evaluation features."""
    classifier = classifier.cpu().eval()
    logits = classifier(features.float().cpu())
    top = logits.topk(min(5, logits.shape[1]), dim=1).indices
    hits = top == labels.view(-1, 1)
    return {"top1": 100.0 * hits[:, 0].float().mean().item(), "top5": 100.0 * hits.any(1).float().mean().item()}


def headline_metrics(row: dict) -> dict[str, float]:
    """Flat {metric: value} of one model's evaluation (top-1 numbers, clustering scores)."""
    flat = {f"knn_{name}": scores["top1"] for name, scores in row.get("knn", {}).items()}
    if "linear" in row:
        flat["linear"] = row["linear"]["top1"]
    if "classifier" in row:
        flat["classifier"] = row["classifier"]["top1"]
    for fraction, scores in row.get("few_shot", {}).items():
        flat[f"few_shot_{fraction}"] = scores["top1"]
    for name, value in row.get("clustering", {}).items():
        flat[f"cluster_{name}"] = value
    if "teacher_alignment" in row:
        flat["teacher_cka"] = row["teacher_alignment"]["linear_cka"]
        flat["teacher_dcor2"] = row["teacher_alignment"]["dcor2"]
    return flat


def retained(models: dict[str, dict], reference: str = "teacher", student: str = "student") -> dict[str, float]:
    """Student's share of the teacher's number for every headline metric (percent)."""
    if student not in models or reference not in models:
        return {}
    student, teacher = headline_metrics(models[student]), headline_metrics(models[reference])
    return {name: 100.0 * student[name] / teacher[name] for name in student if teacher.get(name, 0) > 0}
