"""What MV-MR's distillation needs: a learning curve and the levers the method's own objective has, on Q2.

    python -m benchmarks.mvmr_study                      # every unfinished row (resumable), cheapest first
    python -m benchmarks.mvmr_study --only mvmr_kd_e100 feature_e100
    python -m benchmarks.mvmr_study --table-only --docs

Every row is a Q2 recipe (CIFAR-10, 10,000 training images, ResNet-56 teacher, MobileNetV3-Small at 32 px) with one
change. The learning curve trains MV-MR-KD (ours: bias-corrected dCor; and the official preset) and feature regression
beside it for 30, 100 and 300 epochs, each a whole schedule of its own (warm-up and cosine over that many epochs, not a
longer run read early); the official preset (with its 8192-wide projector, 143 M parameters on the student's
1,024-wide embedding) runs 30 and 100 epochs only. The levers: the official projector width (8192, three layers) with
our dCor; a batch of 512 at the same number of optimiser steps as the 30-epoch row (120 epochs, the warm-up 4 epochs so
it spans the same steps; dCor is a statistic of the batch it is computed on: gradient accumulation would sum four dCor
values of 128 images, so the batch itself is 512); and the teacher term weighted 4 and 16 against the invariance terms, and alone (the invariance terms weighted 0); and the teacher's
embedding PCA-whitened before its dCor term (``teacher_whitening: pca``, docs/methods/mvmr.md#whitened-teacher); and the
teacher term on the backbone's pooled features instead of the projector's output (``teacher_on: backbone``), at weight 1
and 16. The 30-epoch rows of MV-MR-KD and feature regression are the Q2
table's (``benchmarks/results/q2/mvmr_kd-cpu.json``, ``feature-cpu.json``) and are read from there.

Each row's record: ``benchmarks/results/mvmr_study/<row>-cpu.json``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.quality.paths import REPO, RESULTS

STUDY = RESULTS / "mvmr_study"
COMMAND = "python -m benchmarks.mvmr_study"
MVMR = REPO / "configs" / "q2" / "mvmr_kd.yaml"
FEATURE = REPO / "configs" / "q2" / "feature.yaml"
# the preset, and the two values the Q2 config sets explicitly (a config's own keys win over a preset)
OFFICIAL = {"method": {"preset": "official", "projector": [8192, 8192, 8192], "dcor_estimator": "biased"}}

ROWS: dict[str, tuple[str, Path, dict, int]] = {  # name -> (label, recipe, overrides, epochs)
    "mvmr_kd_e30": ("MV-MR-KD, ours", MVMR, {}, 30),
    "feature_e30": ("feature regression", FEATURE, {}, 30),
    "mvmr_kd_e100": ("MV-MR-KD, ours", MVMR, {}, 100),
    "feature_e100": ("feature regression", FEATURE, {}, 100),
    "mvmr_kd_official_e30": ("MV-MR-KD, official preset (8192-wide projector)", MVMR, OFFICIAL, 30),
    "mvmr_kd_teacher4_e30": ("MV-MR-KD, ours, teacher term x4", MVMR, {"method": {"weights": {"teacher": 4.0}}}, 30),
    "mvmr_kd_teacher16_e30": ("MV-MR-KD, ours, teacher term x16", MVMR, {"method": {"weights": {"teacher": 16.0}}}, 30),
    "mvmr_kd_teacheronly_e30": (
        "MV-MR-KD, ours, the teacher term alone (MSE, std and two-view terms weighted 0)",
        MVMR,
        {"method": {"weights": {"mse": 0.0, "std": 0.0, "views": 0.0}}},
        30,
    ),
    "mvmr_kd_whitened_e30": (
        "MV-MR-KD, ours, whitened teacher (teacher_whitening: pca, shrinkage 0.1)",
        MVMR,
        {"method": {"teacher_whitening": "pca"}},
        30,
    ),
    "mvmr_kd_backbone_e30": (
        "MV-MR-KD, ours, teacher term on the backbone's pooled features (teacher_on: backbone)",
        MVMR,
        {"method": {"teacher_on": "backbone"}},
        30,
    ),
    "mvmr_kd_backbone_teacher16_e30": (
        "MV-MR-KD, ours, teacher term on the backbone's pooled features, weighted 16",
        MVMR,
        {"method": {"teacher_on": "backbone", "weights": {"teacher": 16.0}}},
        30,
    ),
    "mvmr_kd_batch512_e120": (
        "MV-MR-KD, ours, batch 512 at the same optimiser steps (120 epochs, warm-up 4)",
        MVMR,
        {"data": {"batch_size": 512}, "optim": {"warmup_epochs": 4}},
        120,
    ),
    "mvmr_kd_proj8192_e30": ("MV-MR-KD, ours, projector 8192 x3", MVMR, {"method": {"projector": [8192, 8192, 8192]}}, 30),
    "feature_e300": ("feature regression", FEATURE, {}, 300),
    "mvmr_kd_e300": ("MV-MR-KD, ours", MVMR, {}, 300),
    "mvmr_kd_official_e100": ("MV-MR-KD, official preset (8192-wide projector)", MVMR, OFFICIAL, 100),
}  # no official 300-epoch row: its 8192-wide projector (143 M parameters) would take about 20 hours here
FROM_Q2_TABLE = {"mvmr_kd_e30": "mvmr_kd", "feature_e30": "feature"}  # the same config: the Q2 table's rows


def row_config(row: str, runs_dir: Path) -> tuple[Path, dict]:
    from benchmarks.quality.rows import merge

    _, recipe, own, epochs = ROWS[row]
    overrides = {"trainer": {"epochs": epochs, "progress_bar": False}, "eval": {"suite": "full"}}
    merge(overrides, json.loads(json.dumps(own)))
    overrides["run"] = {"dir": str(runs_dir), "name": f"mvmr-study-{row}"}
    return recipe, overrides


def record_path(results: Path, row: str) -> Path:
    if row in FROM_Q2_TABLE and results == STUDY:
        return RESULTS / "q2" / f"{FROM_Q2_TABLE[row]}-cpu.json"
    return Path(results) / f"{row}-cpu.json"


def measure(rows: list[str], results: Path = STUDY, runs_dir: Path | None = None, force: bool = False) -> None:
    from benchmarks.quality.run import study_row

    runs_dir = Path(runs_dir) if runs_dir is not None else REPO / "runs"
    for row in rows:
        if row in FROM_Q2_TABLE and results == STUDY:  # measured by the Q2 table's own command, never here
            if not record_path(results, row).is_file():
                print(f"{row}: run python -m benchmarks.quality --tier cpu --bench q2 --only {FROM_Q2_TABLE[row]}")
            continue
        recipe, overrides = row_config(row, runs_dir)
        extra = {"study": {"row": row, "label": ROWS[row][0], "epochs": ROWS[row][3], "command": f"{COMMAND} --only {row}"}}
        record = study_row(record_path(results, row), recipe, overrides, runs_dir, extra, force)
        print(f"{row}: k-NN {record['knn']['student']['top1']:.1f}", flush=True)


def table(results: Path = STUDY) -> str | None:
    """The learning curve (k-NN / linear / dCor² with the teacher at 30, 100, 300 epochs per method) and the levers."""
    from benchmarks.quality.records import duration, metrics
    from ssdistill.eval.tables import cell

    found = {row: json.loads(record_path(results, row).read_text()) for row in ROWS if record_path(results, row).is_file()}
    if not found:
        return None
    first = next(iter(found.values()))
    teacher, random_init = metrics(first, "teacher")["k20"], metrics(first, "random_init")["k20"]

    def figures(record) -> str:
        m = metrics(record, "student")
        return f"{cell(m['k20'])} / {cell(m['linear'])} / {cell(m['dcor2'], 2)}"

    lines = [
        f"Q2 (CIFAR-10, 10,000 training images, ResNet-56 teacher: k-NN {cell(teacher)}; random init {cell(random_init)}), "
        "one seed; each cell: k-NN k20 / linear / dCor² with the teacher on val, and the training time. "
        f"`{COMMAND}`",
        "",
        "| row | 30 epochs | 100 epochs | 300 epochs |",
        "| --- | --- | --- | --- |",
    ]
    curves = {}
    for row, (label, _, own, epochs) in ROWS.items():
        if own.get("method", {}).get("preset") == "official" or not own:
            curves.setdefault(label, {})[epochs] = row
    for label, by_epochs in curves.items():
        cells = []
        for epochs in (30, 100, 300):
            row = by_epochs.get(epochs)
            record = found.get(row) if row else None
            cells.append(f"{figures(record)} ({duration((record.get('timing') or {}).get('train_seconds'))})" if record else "–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    levers = [row for row, (_, _, own, _) in ROWS.items() if own and own != OFFICIAL and row in found]
    if levers:
        lines += ["", "| lever, 30 epochs | k-NN / linear / dCor² | training |", "| --- | --- | ---: |"]
        for row in levers:
            lines.append(f"| {ROWS[row][0]} | {figures(found[row])} | {duration((found[row].get('timing') or {}).get('train_seconds'))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=list(ROWS), help="rows by name (default: all, in the listed order)")
    parser.add_argument("--table-only", action="store_true", help="render the table from the records, train nothing")
    parser.add_argument("--docs", action="store_true", help="also fill the block mvmr-study of docs/methods/mvmr.md")
    parser.add_argument("--results", type=Path, default=STUDY)
    parser.add_argument("--runs", type=Path, default=None, help="folder of the rows' runs (default: runs/)")
    parser.add_argument("--force", action="store_true", help="measure rows on record again")
    args = parser.parse_args(argv)
    if not args.table_only:
        measure(args.only or list(ROWS), args.results, args.runs, args.force)
    markdown = table(args.results)
    if markdown is None:
        print(f"no row on record: run {COMMAND}")
        return 1
    print(markdown)
    if args.docs:
        from benchmarks.quality.docs import replace_block
        from benchmarks.quality.paths import REPO as root

        replace_block(root / "docs" / "methods" / "mvmr.md", "bench:mvmr-study", markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
