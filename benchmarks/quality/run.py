"""Measuring rows: one row on one tier (written to its JSON record as soon as it finishes, read back when finished,
resumed from its run's last checkpoint when interrupted), and every requested row of a tier."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from benchmarks.quality import rows
from benchmarks.quality.paths import REPO, RESULTS, row_path, shown
from benchmarks.quality.records import metrics
from benchmarks.quality.rows import TASK_BENCHES
from benchmarks.quality.tiers import TIERS, run_dir_and_overrides
from ssdistill.eval.tables import cell


def run_row(
    tier_name: str,
    bench: str,
    method: str,
    *,
    results_dir: Path = RESULTS,
    runs_dir: Path | None = None,
    force: bool = False,
    quiet: bool = True,
    seed: int | None = None,
) -> dict:
    """Measure one row (or read it back when finished) and write its JSON; returns the row record."""
    if tier_name != "smoke":
        from benchmarks.datasets import q3_data, unpack_benchmark_data

        q3_data(bench) if bench in TASK_BENCHES else unpack_benchmark_data(bench)  # `make data`, when it was not run
    out = row_path(results_dir, bench, method if seed is None else f"{method}-seed{seed}", tier_name)  # as benchmarks/results/seeds/q3c
    run_dir, overrides = run_dir_and_overrides(TIERS[tier_name], bench, method, runs_dir, seed)
    recipe = rows.recipe_path(bench, method)
    record = json.loads(out.read_text()) if out.is_file() and not force else train_or_resume(recipe, overrides, run_dir, force, quiet)
    if overrides.get("eval", {}).get("suite") == "full" and not record.get("evaluation"):
        record["evaluation"] = _full_evaluation(Path(record["run_dir"]))
    record["benchmark"] = {
        "bench": bench,
        "tier": tier_name,
        "method": method,
        "recipe": str(recipe.relative_to(REPO)),
        "overrides": {k: v for k, v in overrides.items() if k != "run"},
        "command": f"python -m benchmarks.quality --tier {tier_name} --bench {bench} --only {method}"
        + ("" if seed is None else f" --seed {seed} --results {shown(results_dir)}"),
    }
    if not record.get("epoch_losses"):  # a row read back keeps its losses: its run directory may be gone
        record["epoch_losses"] = epoch_losses(Path(record["run_dir"]))
    if not record.get("monitor_knn"):
        record["monitor_knn"] = monitor_curve(Path(record["run_dir"]), record)
    if bench in TASK_BENCHES:
        from benchmarks.amalgamation import add_task_scores

        add_task_scores(bench, record)  # rows without task heads: k-means of their student per task
    write_json(out, record)
    return record


def same_config(run_dir: Path, recipe, overrides: dict) -> None:
    """Refuse (one line) to read back or resume a run whose saved config is not the one asked for: a row would
    otherwise report another schedule's or another recipe's figures under its own name. The run's place and the
    progress bar do not count."""
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return
    from ssdistill.engine.resume import config_changes
    from ssdistill.recipe import build_config

    changes = config_changes(build_config(saved), build_config(recipe, overrides))
    differ = sorted(key for key in changes if not (key.startswith("run.") or key == "trainer.progress_bar"))
    if differ:
        key = differ[0]
        have, want = changes[key]
        raise SystemExit(
            f"{run_dir} was trained with {key}={have!r} but this row asks for {want!r}"
            f"{f' (and {len(differ) - 1} more keys)' if len(differ) > 1 else ''}: move that run folder away or measure the row with --force"
        )


def train_or_resume(recipe: Path, overrides: dict, run_dir: Path, force: bool = False, quiet: bool = True) -> dict:
    """The results record of the run ``recipe`` + ``overrides`` makes in ``run_dir``: read back when it finished,
    resumed from its last checkpoint when it was interrupted, else trained from the start (``force``: from the start
    in any case)."""
    from ssdistill import distill

    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    same_config(run_dir, recipe, overrides)
    if (run_dir / "results.json").is_file():  # finished before its row was written
        return json.loads((run_dir / "results.json").read_text())
    if (run_dir / "checkpoints" / "last.ckpt").is_file():
        return distill(resume=run_dir, quiet=quiet, trainer={"progress_bar": False})
    shutil.rmtree(run_dir, ignore_errors=True)  # never got to its first checkpoint
    return distill(recipe, overrides=overrides, quiet=quiet)


def study_row(out: Path, base, overrides: dict, runs_dir: Path, extra: dict, force: bool = False) -> dict:
    """One row of a study outside the bench tables (benchmarks/recipe_validation.py, benchmarks/mvmr_study.py): read
    back from ``out`` when on record, else trained, resumed or read back from its run (``overrides["run"]["name"]``
    under ``runs_dir``), given the entries of ``extra`` and written to ``out``."""
    if out.is_file() and not force:
        return json.loads(out.read_text())
    record = train_or_resume(base, overrides, Path(runs_dir) / overrides["run"]["name"], force=force)
    record.update(extra)
    write_json(out, record)
    return record


def run_tier(
    tier: str,
    benches=None,
    methods=None,
    *,
    results_dir: Path = RESULTS,
    runs_dir: Path | None = None,
    force: bool = False,
    quiet: bool = True,
    readme: Path | None = None,
    log=print,
    seed: int | None = None,
) -> dict[tuple[str, str], dict]:
    """Every requested row of a tier, each written as it completes; tables regenerated after each row."""
    from benchmarks.quality.tables import write_table

    done = {}
    for bench in benches or TIERS[tier].benches:
        for method in methods or rows.catalogue().names:
            if method not in rows.catalogue().on(bench):
                log(f"{bench} {method}: no recipe, skipped")
                continue
            record = run_row(tier, bench, method, results_dir=results_dir, runs_dir=runs_dir, force=force, quiet=quiet, seed=seed)
            done[(bench, method)] = record
            student = metrics(record, "student")["k20"]
            log(f"{bench} {method} ({tier}): student k-NN {cell(student)} %, random init {cell(metrics(record, 'random_init')['k20'])} %")
            if seed is None:  # other seeds' rows are files of their own, kept beside the table's rows
                write_table(bench, tier, results_dir, readme)
    return done


def _full_evaluation(run_dir: Path) -> dict | None:
    """The run's full evaluation: read back from RUN/evaluation.json, else computed now (student features only;
    the teacher's come from its cache)."""
    from ssdistill.api import evaluate

    saved = run_dir / "evaluation.json"
    record = json.loads(saved.read_text()) if saved.is_file() else evaluate(run_dir, full=True)
    return record.get("evaluation")


def add_teacher_alignment(record: dict) -> bool:
    """Fill ``teacher_alignment`` (linear CKA, dCor² on val) into a finished row's evaluation from the features its
    run kept on disk (``RUN/features/<model>-val-*.pt``) and the teacher's cached val features; rows evaluated
    before the suite computed it. Returns whether anything was added; a row whose run directory is gone is left."""
    from ssdistill.api import teacher_split_features
    from ssdistill.eval.alignment import teacher_alignment
    from ssdistill.recipe import build_config

    models = ((record.get("evaluation") or {}).get("models")) or {}
    missing = [label for label in ("student", "random_init") if label in models and "teacher_alignment" not in models[label]]
    run_dir = Path(record.get("run_dir", ""))
    run_dir = run_dir if run_dir.is_absolute() else REPO / run_dir
    if not missing or not (run_dir / "config.yaml").is_file():
        return False
    import torch

    cfg = build_config(run_dir / "config.yaml")
    teacher = teacher_split_features(cfg, cfg.data.val)
    for label in missing:
        found = sorted((run_dir / "features").glob(f"{label}-val-*.pt"))
        if len(found) != 1:
            raise SystemExit(f"{run_dir}/features holds {len(found)} {label} val feature files, expected one: re-run its evaluation")
        models[label]["teacher_alignment"] = teacher_alignment(torch.load(found[0], weights_only=True), teacher, seed=cfg.trainer.seed)
    return True


def write_json(path: Path, record: dict) -> None:
    from ssdistill.files import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    embedding_free = json.loads(json.dumps(record))
    for row in ((embedding_free.get("evaluation") or {}).get("models") or {}).values():
        row.pop("embedding", None)  # 2-D map coordinates stay in the run directory
    atomic_write_text(path, json.dumps(embedding_free, indent=2))


def epoch_losses(run_dir: Path) -> list[float]:
    """Mean training loss of every epoch, from the run's metrics.csv (empty when the run directory is gone)."""
    metrics_csv = run_dir / "metrics.csv"
    if not metrics_csv.is_file():
        return []
    by_epoch = {}
    for row in csv.DictReader(metrics_csv.open()):
        if row.get("train/loss_epoch"):
            by_epoch[int(row["epoch"])] = float(row["train/loss_epoch"])
    return [by_epoch[e] for e in sorted(by_epoch)]


def monitor_curve(run_dir: Path, record: dict) -> list[dict]:
    """The k-NN monitor's points (``eval.monitor_every``; empty without it): for each monitored epoch, the student's
    top-1 (and the EMA copy's, ``ema``) against a memory of at most ``eval.monitor_images`` training images, and the
    training seconds up to the end of that epoch (``timing.epoch_train_seconds``: batches only, monitors excluded)."""
    metrics_csv = run_dir / "metrics.csv"
    seconds = (record.get("timing") or {}).get("epoch_train_seconds") or []
    if not metrics_csv.is_file() or not seconds:
        return []
    points: dict[int, dict] = {}
    for row in csv.DictReader(metrics_csv.open()):
        for key, name in (("monitor/knn_top1", "student"), ("monitor/ema/knn_top1", "ema")):
            if row.get(key):
                epoch = int(row["epoch"])
                points.setdefault(epoch, {"epoch": epoch + 1, "train_seconds": round(sum(seconds[: epoch + 1]), 1)})[name] = float(row[key])
    return [points[e] for e in sorted(points)]
