"""Seed spread of every learning assertion in the test suite (docs/benchmarks.md): the figure each test asserts, measured
over several seeds, so that its margin can be set with room for another CPU (figures move by a few points between
CPUs: other kernel paths round differently, and a training trajectory follows the rounding).

    python -m benchmarks.spread                          # every check, seeds 0-3 (about an hour on 2 cores)
    python -m benchmarks.spread --only mvmr_teacher --seeds 0 1 2 3 4 5
    python -m benchmarks.spread --table-only --docs   # re-render the table (and its block in docs/benchmarks.md)

Each (check, seed) is written to benchmarks/results/spread-cpu.json as soon as it finishes and is not recomputed
(``--force`` does); benchmarks/results/spread-cpu.md gives min / mean / max of every figure next to the bound its
test asserts.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DEMO = REPO / "configs" / "demo"


def _per_epoch(run_dir: Path, term: str) -> list[float]:
    rows = csv.DictReader((run_dir / "metrics.csv").open())
    return [float(r[f"train/{term}_epoch"]) for r in rows if r.get(f"train/{term}_epoch")]


def _run(config: Path, seed: int, runs: Path, name: str, **sections) -> tuple[dict, Path]:
    from ssdistill import distill

    sections.setdefault("eval", {"teacher": False})
    trainer = {"progress_bar": False, "seed": seed, **sections.pop("trainer", {})}
    results = distill(config, trainer=trainer, run={"dir": str(runs), "name": name}, quiet=True, **sections)
    return results, runs / name


def _lift(results: dict) -> dict[str, float]:
    knn = results["knn"]
    return {
        "student_knn": knn["student"]["top1"],
        "random_init_knn": knn["random_init"]["top1"],
        "knn_lift": knn["student"]["top1"] - knn["random_init"]["top1"],
    }


def demo_feature(seed: int, runs: Path) -> dict[str, float]:
    """tests/integration/test_real_images.py::test_smoke_distillation_learns_on_real_images (the demo recipe)."""
    results, run_dir = _run(DEMO / "feature.yaml", seed, runs, "demo")
    losses = _per_epoch(run_dir, "loss")
    start, last = _monitor_cka(run_dir)
    return {**_lift(results), "loss_drop": losses[0] - losses[-1], "cka_start": start, "cka_last": last, "cka_lift": last - start}


def _monitor_cka(run_dir: Path) -> tuple[float, float]:
    """The alignment monitor's linear CKA with the teacher before the first step and after the last epoch."""
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    start = [float(r["monitor/teacher_cka_start"]) for r in rows if r.get("monitor/teacher_cka_start")]
    every = [float(r["monitor/teacher_cka"]) for r in rows if r.get("monitor/teacher_cka")]
    return start[0], every[-1]


def mvmr_teacher(seed: int, runs: Path) -> dict[str, float]:
    """tests/integration/test_real_images.py::test_mvmr_teacher_term_teaches_the_student_on_real_images."""
    results, run_dir = _run(
        DEMO / "mvmr_kd.yaml",
        seed,
        runs,
        "mvmr-teacher",
        method={"weights": {"mse": 0.0, "std": 0.0, "views": 0.0}},
        optim={"lr": 0.002},
        eval={"teacher": True},
    )
    term = _per_epoch(run_dir, "teacher")
    student, random_init = (results["knn"][label]["teacher_alignment"]["dcor2"] for label in ("student", "random_init"))
    return {
        **_lift(results),
        "teacher_term_drop": term[0] - term[-1],
        "student_dcor2": student,
        "random_init_dcor2": random_init,
        "dcor2_lift": student - random_init,
    }


def mvmr_ssl(seed: int, runs: Path) -> dict[str, float]:
    """tests/integration/test_real_images_ssl.py::test_mvmr_self_supervised_mode_raises_dependence_with_every_representation."""
    _, run_dir = _run(
        DEMO / "mvmr_kd.yaml",
        seed,
        runs,
        "mvmr-ssl",
        method={"mode": "ssl"},
        optim={"lr": 0.002},
        trainer={"epochs": 8},
        eval={"teacher": False, "random_init": False},
    )
    return {f"{term}_drop": (values := _per_epoch(run_dir, term))[0] - values[-1] for term in ("raw", "hog", "local_std", "views")}


def smoke(seed: int, runs: Path) -> dict[str, float]:
    """tests/bench/test_smoke_tier*.py: the k-NN lift over random init and the loss ratio of every smoke-tier row the
    tests check (``benchmarks.quality.smoke.smoke_tests``), and the figures of their extra checks. Seed 0 is the smoke tier itself: its
    rows are (re)written to benchmarks/results like ``--tier smoke --force``."""
    from benchmarks.quality import RESULTS
    from benchmarks.quality.run import run_tier
    from benchmarks.quality.smoke import smoke_tests

    results = RESULTS if seed == 0 else runs / "results"
    done = {}
    for bench, method in (row for rows in smoke_tests().values() for row in rows):
        done.update(
            run_tier(
                "smoke",
                [bench],
                [method],
                results_dir=results,
                runs_dir=runs / "runs",
                seed=None if seed == 0 else seed,
                force=seed == 0,
                log=lambda line: None,
            )
        )
    return {name: value for (_, method), record in done.items() for name, value in smoke_figures(method, record).items()}


def smoke_figures(method: str, record: dict) -> dict[str, float]:
    """A smoke row's k-NN lift over random init and its last epoch's loss over the first comparable epoch's."""
    from benchmarks.quality.smoke import first_comparable_epoch

    losses, knn = record["epoch_losses"], record["knn"]
    figures = {
        f"{method}_knn_lift": knn["student"]["top1"] - knn["random_init"]["top1"],
        f"{method}_loss_ratio": losses[-1] / losses[first_comparable_epoch(method, record)],
    }
    if "teacher_alignment" in knn["student"] and "teacher_alignment" in knn["random_init"]:
        figures[f"{method}_dcor2_lift"] = knn["student"]["teacher_alignment"]["dcor2"] - knn["random_init"]["teacher_alignment"]["dcor2"]
    for name, task in (record.get("tasks") or {}).items():  # CKA: each task head over the random-init student's k-means
        figures[f"{method}_task_{name}_acc_lift"] = task["student_head"]["accuracy"] - task["random_init_kmeans"]["accuracy"]
    for label, row in knn.items():  # rows trained with labels: every member's lift and classifier
        if "classifier" in row:
            figures[f"{method}_{label}_knn_lift"] = row["top1"] - knn[label.replace("student", "random_init", 1)]["top1"]
            figures[f"{method}_{label}_classifier"] = row["classifier"]["top1"]
    return figures


CHECKS: dict[str, Callable[[int, Path], dict[str, float]]] = {
    "demo_feature": demo_feature,
    "mvmr_teacher": mvmr_teacher,
    "mvmr_ssl": mvmr_ssl,
    "smoke": smoke,
}
# the bound each test asserts on a figure (figure -> text), shown next to the measured spread
BOUNDS = {
    "demo_feature": {"knn_lift": ">= 10", "loss_drop": "> 0.05", "cka_lift": ">= 0.03"},
    "mvmr_teacher": {"knn_lift": "not asserted (noise at this scale)", "teacher_term_drop": "> 0.1", "dcor2_lift": ">= 0.04"},
    "mvmr_ssl": {"raw_drop": "> 0.08", "hog_drop": "> 0", "local_std_drop": "> 0.08", "views_drop": "> 0.08"},
}


def _smoke_bounds() -> dict[str, str]:
    """The bounds of benchmarks.quality.smoke.check_row, per smoke figure."""
    from benchmarks.quality.rows import catalogue

    rows, checks = catalogue(), catalogue().checks
    bounds = {"mvmr_ssl_loss_ratio": f"<= {1 - checks['loss_drop']:g}", "mcl_supervised_loss_ratio": f"<= {1 - checks['loss_drop']:g}"}
    for member in ("student", "student_peer1"):
        bounds[f"mcl_supervised_{member}_knn_lift"] = f">= {checks['knn_margin']:g}"
        bounds[f"mcl_supervised_{member}_classifier"] = f">= {checks['classifier_min']:g}"
    for task in ("a", "b"):
        bounds[f"cka_task_{task}_acc_lift"] = f">= {checks['task_margin']:g}"
    for method in (method for pairs in rows.smoke_tests().values() for _, method in pairs):
        if rows.has_teacher(method):
            bounds[f"{method}_knn_lift"] = f">= {rows.knn_margin(method):g}"
            bounds[f"{method}_dcor2_lift"] = f">= {checks['dcor2_margin']:g}"
            bounds[f"{method}_loss_ratio"] = "< 1"
    return bounds


BOUNDS["smoke"] = _smoke_bounds()


def machine_and_versions() -> dict:
    from ssdistill.engine.records import machine
    from ssdistill.engine.records import versions as _versions

    return {"machine": machine(), "versions": _versions()}


def table(record: dict) -> str:
    lines = [
        f"Seed spread of the learning assertions ({record.get('machine', {}).get('cpu_model', '?')}, "
        f"{record.get('machine', {}).get('cpus', '?')} CPUs); `python -m benchmarks.spread`",
        "",
        "| check | figure | seeds | min | mean | max | test asserts |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for check, by_seed in record.get("checks", {}).items():
        names = sorted({name for figures in by_seed.values() for name in figures})
        for name in names:
            values = [figures[name] for figures in by_seed.values() if name in figures]
            lines.append(
                f"| {check} | {name} | {len(values)} | {min(values):.3f} | {statistics.mean(values):.3f} | {max(values):.3f} | "
                f"{BOUNDS.get(check, {}).get(name, '')} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from ssdistill.files import atomic_write_text

    parser = argparse.ArgumentParser(prog="python -m benchmarks.spread", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(CHECKS), help="checks to run (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    parser.add_argument("--force", action="store_true", help="recompute (check, seed) pairs already measured")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument(
        "--docs", "--readme", dest="docs", action="store_true", help="also replace the block of docs/benchmarks.md between <!-- spread --> markers"
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    path = args.results / "spread-cpu.json"
    read = lambda: json.loads(path.read_text()) if path.is_file() else {"checks": {}}  # noqa: E731
    record = read()
    if not args.table_only:
        for check in args.only or CHECKS:
            for seed in args.seeds:
                if str(seed) in record["checks"].get(check, {}) and not args.force:
                    continue
                with tempfile.TemporaryDirectory() as runs:
                    figures = CHECKS[check](seed, Path(runs))
                record = read()  # another process may have added pairs meanwhile: add this one to what is on disk
                record["checks"].setdefault(check, {})[str(seed)] = figures
                record.update(machine_and_versions(), updated=datetime.now(timezone.utc).isoformat(timespec="seconds"))
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(path, json.dumps(record, indent=2))
                print(f"{check} seed {seed}: {figures}", flush=True)
    markdown = table(record)
    atomic_write_text(args.results / "spread-cpu.md", markdown)
    if args.docs:
        from benchmarks.quality import DOCS, replace_block

        replace_block(DOCS, "spread", markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
