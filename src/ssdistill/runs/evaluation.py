"""Evaluating a run: every named teacher, a random-init copy of every student and every trained student, side by
side on one protocol (k-NN only, or the full suite), with each model's alignment with the primary teacher; at the end
of training (``evaluate_run``) or later, from the run's folder (``evaluate_saved_run``, ``ssdistill eval RUN``).

Rows are labelled ``teacher`` / ``teacher_<name>``, ``random_init`` / ``random_init_<member>`` and ``student`` /
``student_<member>`` (``labels.teacher_label``, ``labels.student_label``), in that order; a cohort adds
``student_ensemble`` (its members' normalised features concatenated)."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from torch import nn

from ssdistill.config import DistillConfig
from ssdistill.data.datasets import ImageSource
from ssdistill.data.views import original_view
from ssdistill.engine.provider import TeacherProvider
from ssdistill.engine.records import machine, versions
from ssdistill.engine.rundir import busy
from ssdistill.errors import DataError
from ssdistill.eval.classes import class_names
from ssdistill.eval.suite import KNN_PROTOCOLS, Candidate, SuiteOptions, evaluate_suite, protocol_name
from ssdistill.files import atomic_write_text
from ssdistill.labels import ENSEMBLE, student_label, teacher_label
from ssdistill.models.students import CohortEnsemble, Student
from ssdistill.recipe import build_config
from ssdistill.runs.assemble import evaluation_split, memory_name, train_source
from ssdistill.runs.load import build_students, load_run, send_to_run_trackers

log = logging.getLogger("ssdistill")

KNN_ROW_KEYS = ("images_per_s", "params_m", "gflops", "resolution", "teacher_alignment", "classifier")


def student_candidates(
    students: dict[str, Student],
    initial: dict[str, Student] | None,
    resolution: dict[str, int],
    classifiers: dict[str, nn.Module] | None = None,
    copies: set[str] | frozenset[str] = frozenset(),
) -> list[Candidate]:
    """Random-init rows (when ``initial`` is given), trained rows by member (with the member's classifier when the
    method trained one), and for a cohort of two or more independent members (``copies``, such as an EMA copy, do not
    count) that share a resolution the ensemble row ``student_ensemble``."""
    rows = []
    for member, model in (initial or {}).items():
        rows.append(Candidate(student_label(member, "random_init"), model, original_view(resolution[member]), resolution[member]))
    for member, model in students.items():
        classifier = (classifiers or {}).get(member)
        rows.append(Candidate(student_label(member), model, original_view(resolution[member]), resolution[member], classifier=classifier))
    cohort = {member: model for member, model in students.items() if member not in copies}
    sizes = {resolution[member] for member in cohort}
    if len(cohort) > 1 and len(sizes) == 1:
        size = sizes.pop()
        rows.append(Candidate(student_label(ENSEMBLE), CohortEnsemble(cohort), original_view(size), size))
    return rows


def teacher_candidates(
    cfg: DistillConfig, ctx: TeacherProvider, memory: ImageSource, memory_spec: str, query_spec: str, query: ImageSource | None = None
) -> list[Candidate]:
    """Every named teacher with its pooled tap (the tap every evaluation reads, docs/evaluation.md) and its own view; its
    features from the cache when it is on (those of the training split reused from the run)."""
    rows = []
    for name in cfg.teachers:
        teacher = ctx.teacher(name, "pooled")
        bank = ctx.features(name, memory_spec, memory, "pooled")
        queries = ctx.features(name, query_spec, query, "pooled") if cfg.cache.enabled else None
        rows.append(Candidate(teacher_label(name), teacher, teacher.original_view(), teacher.preprocess.resolution, bank, queries))
    return rows


def evaluate_run(
    cfg: DistillConfig,
    ctx: TeacherProvider,
    students: dict[str, Student],
    initial: dict[str, Student] | None,
    resolution: dict[str, int],
    run_dir: str | Path | None = None,
    classifiers: dict[str, nn.Module] | None = None,
    split: tuple[str, ImageSource] | None = None,
    copies: set[str] | frozenset[str] = frozenset(),
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, str | None, dict[str, Any] | None]:
    """(k-NN side by side, full evaluation or None, note, classes): the full suite when ``eval.suite`` is full;
    ``classes``: how the evaluation split's classes were matched to the memory's (``eval.classes.align_classes``);
    without labelled data, (None, None, a note saying what to set, None). ``split``: (name, images) of the evaluation split when it
    is not ``data.val`` (a method's own, for example the union of CKA's tasks' evaluation splits)."""
    if split is None and not cfg.data.val:
        return None, None, "no data.val given: set data.val to a labelled split to get k-NN numbers", None
    memory_spec = cfg.data.knn_train or cfg.data.train
    memory = ctx.open(cfg.data.knn_train) if cfg.data.knn_train else ctx.source
    if memory.labels is None:
        return None, None, "data.train has no class folders: set data.knn_train to a labelled split to get k-NN numbers", None
    query_spec, query = split if split is not None else (cfg.data.val, ctx.open(cfg.data.val))
    if query.labels is None:
        return None, None, f"the evaluation split ({query_spec}) has no class folders, so k-NN cannot be scored", None
    if classifiers and class_names(memory) != class_names(ctx.source):  # a classifier's ids are the training split's
        log.warning("the k-NN memory (data.knn_train) has other classes than the training split: its trained classifiers are not scored")
        classifiers = None
    candidates = teacher_candidates(cfg, ctx, memory, memory_spec, query_spec, query) if cfg.eval.teacher else []
    candidates += student_candidates(students, initial if cfg.eval.random_init else None, resolution, classifiers, copies)
    primary = (cfg.eval.knn_k, cfg.eval.knn_t)
    full = cfg.eval.suite == "full"
    if full:
        options = SuiteOptions(knn=tuple(dict.fromkeys([primary, *KNN_PROTOCOLS])), seed=cfg.trainer.seed)
    else:
        options = SuiteOptions.knn_only(*primary)
    options.shared_classes = cfg.eval.shared_classes
    options.split_names = (memory_name(cfg), f"data.val ({query_spec})" if split is None else query_spec)
    feature_dir = None if run_dir is None or not full else Path(run_dir) / "features"
    args = (cfg.data.eval_batch_size, cfg.data.num_workers, ctx.device)
    students_first = next((c.label for c in candidates if c.label.startswith("student")), "student")
    suite = evaluate_suite(
        candidates, memory, query, options, *args, feature_dir=feature_dir, reference=teacher_label(cfg.primary_teacher), student=students_first
    )
    return knn_table(suite, *primary), (suite if full else None), None, suite["classes"]


def knn_table(suite: dict[str, Any], k: int, temperature: float) -> dict[str, dict[str, Any]]:
    """{label: k-NN top-1 / top-5 under (k, T), images/s, params, GFLOPs, alignment}: the suite's rows as one table
    (features, FLOPs and images/s are measured once, by the suite)."""
    return {
        label: {**row["knn"][protocol_name(k, temperature)], **{key: row[key] for key in KNN_ROW_KEYS if key in row}}
        for label, row in suite["models"].items()
    }


def evaluate_saved_run(
    run_dir: str | Path,
    checkpoint: str | Path | None,
    device,
    *,
    train: str | None = None,
    val: str | None = None,
    k: int = 20,
    temperature: float = 0.07,
    full: bool = True,
) -> dict[str, Any]:
    """Evaluate a run's students from its folder (the checkpoint read once) next to its teachers and random-init
    students, with k-NN under (``k``, ``temperature``), the full suite when ``full``, and the run's own memory and
    evaluation splits unless ``train`` / ``val`` name others; the record is written to ``RUN/evaluation.json`` and sent
    to the run's trackers."""
    loaded = load_run(run_dir, checkpoint)
    run = loaded.run_dir
    if held := busy(run):
        log.warning("%s: evaluating its checkpoint of step %s, not its final student", held, loaded.step)
    updates = {
        "data": {"knn_train": train or loaded.cfg.data.knn_train, "val": val or loaded.cfg.data.val},
        "eval": {"knn_k": k, "knn_t": temperature, "suite": "full" if full else "knn"},
    }
    cfg, method = build_config(loaded.cfg, updates), loaded.method
    ctx = TeacherProvider(cfg, train_source(cfg), device)
    knn, suite, note, classes = evaluate_run(
        cfg,
        ctx,
        loaded.students,
        build_students(method, cfg),
        loaded.resolution,
        run,
        loaded.classifiers,
        split=evaluation_split(cfg),
        copies=set(method.run_copies(cfg)),
    )
    if knn is None:
        raise DataError(note)
    record = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_dir": str(run),
        "checkpoint": str(loaded.checkpoint),
        "step": loaded.step,
        "data": {"train": cfg.data.knn_train or cfg.data.train, "val": cfg.data.val, "classes": classes},
        "protocol": {"knn": {"k": cfg.eval.knn_k, "temperature": cfg.eval.knn_t, "tap": "pooled", "view": "original"}},
        "knn": knn,
        "evaluation": suite,
        "device": str(device),  # where images/s were measured
        "machine": machine(),
        "versions": versions(),
    }
    atomic_write_text(run / "evaluation.json", json.dumps(record, indent=2))
    send_to_run_trackers(run, [run / "evaluation.json"])  # run.loggers: MLflow, W&B
    return record
