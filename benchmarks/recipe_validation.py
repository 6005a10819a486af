"""Does the recommended recipe hold on data it was not tuned on? Its ingredients, one row each, against plain feature
regression at the same schedule, on small low-resolution data sets the recipe was not built on.

    python -m benchmarks.recipe_validation --data fmnist          # measure every unfinished row (resumable)
    python -m benchmarks.recipe_validation --data fmnist --table-only --docs

The recipe was fitted on Q1 (Imagenette, 96-128 px students) and checked on Q2 (CIFAR-10 at 32 px). Here it meets a
data set a new user might bring: Fashion-MNIST (Debian's ``dataset-fashion-mnist``), the first 400 training and 200
test images of each of its 10 classes, 28 px grayscale, the student at the images' own side, the ImageNet teacher of
Q1 (EfficientNet-Lite0, which sees the images upsampled to its 224 px). 4,000 images at batch 128 and 60 epochs are
1,860 optimiser steps, the run length where a user saw the recipe's EMA copy, at momentum 0.999, lag its student.

The rows (each 60 epochs, seed 0, AdamW 2e-3 as the recipe):

* ``feature``: plain feature regression with the Q1 benchmark's config (configs/q1/feature.yaml: its augmentation,
  random crops of at least half the image and no blur);
* ``recipe_typed``: the recipe as a user types it, ``--recipe recommended`` with the data and models only (the default
  augmentation: crops down to a fifth of the image, blur on half the images);
* ``recipe``: the recipe with the Q1 config's augmentation, as the Q1 rows ran it (the ``feature`` row is this row
  without SEED's relational term and without the EMA copy, which only watches);
* ``recipe_noblur``: the recipe as typed with blur off (the Q2 configs' augmentation), which tells the blur from the
  crop scale apart;
* ``recipe_ema999``: the same with the EMA copy at the earlier fixed momentum 0.999 instead of a time constant of 5 %
  of the run (the student is trained bitwise as in ``recipe``: only the copy differs).

Each row's record: ``benchmarks/results/validation/<data>/<row>-cpu.json``, written as soon as it finishes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.quality.paths import REPO, RESULTS

VALIDATION = RESULTS / "validation"
COMMAND = "python -m benchmarks.recipe_validation"
EPOCHS = 60
Q1_AUG = {"crop_scale_min": 0.5, "blur_p": 0.0}  # configs/q1/feature.yaml's


def _fmnist() -> dict:
    from benchmarks.datasets import fashion_mnist_folders

    folder = fashion_mnist_folders({"train": 400, "test": 200})
    return {
        "data": {"train": str(folder / "train"), "val": str(folder / "test"), "batch_size": 128, "num_workers": 2},
        "student": {"arch": "mobilenetv3_small_100", "resolution": 28},
        "teacher": {"name": "efficientnet_lite0"},
    }


DATASETS = {  # name -> (description, its data and models as overrides)
    "fmnist": (
        "Fashion-MNIST, 400 training and 200 test images per class (10 classes), 28 px, student at 28 px, teacher EfficientNet-Lite0",
        _fmnist,
    ),
}

ROWS = {  # name -> (label, base config, overrides on top of the data set's)
    "feature": ("plain feature regression, the Q1 config (its augmentation), 60 epochs", REPO / "configs" / "q1" / "feature.yaml", {}),
    "recipe_typed": ("the recommended recipe as typed (default augmentation)", "recommended", {}),
    "recipe": ("the recommended recipe with the Q1 config's augmentation", "recommended", {"aug": Q1_AUG}),
    "recipe_noblur": (
        "the recipe as typed without blur (crops down to a fifth of the image, as the Q2 configs)",
        "recommended",
        {"aug": {"blur_p": 0.0}},
    ),
    "recipe_ema999": (
        "the recipe row with the EMA copy at momentum 0.999 (the recipe's earlier setting)",
        "recommended",
        {"aug": Q1_AUG, "trainer": {"ema_momentum": 0.999, "ema_horizon": None}},
    ),
}


def row_config(data: str, row: str, runs_dir: Path) -> tuple[str | Path | dict, dict]:
    """(base config, overrides) of one row: the recipe by name or a config file, then the data set's data and models,
    the row's own changes, 60 epochs, the full evaluation and the run's place."""
    from benchmarks.quality.rows import merge

    _, base, own = ROWS[row]
    overrides = DATASETS[data][1]()
    merge(overrides, {"trainer": {"epochs": EPOCHS, "seed": 0, "progress_bar": False}, "eval": {"suite": "full"}})
    merge(overrides, json.loads(json.dumps(own)))
    overrides["run"] = {"dir": str(runs_dir), "name": f"validation-{data}-{row}"}
    if base == "recommended":
        return {"recipe": "recommended"}, overrides
    return base, overrides


def record_path(results: Path, data: str, row: str) -> Path:
    return Path(results) / data / f"{row}-cpu.json"


def measure(data: str, rows: list[str], results: Path = VALIDATION, runs_dir: Path | None = None, force: bool = False) -> None:
    from benchmarks.quality.run import study_row

    runs_dir = Path(runs_dir) if runs_dir is not None else REPO / "runs"
    for row in rows:
        base, overrides = row_config(data, row, runs_dir)
        extra = {"validation": {"data": data, "row": row, "label": ROWS[row][0], "command": f"{COMMAND} --data {data} --only {row}"}}
        record = study_row(record_path(results, data, row), base, overrides, runs_dir, extra, force)
        print(f"{data} {row}: k-NN {record['knn']['student']['top1']:.1f}", flush=True)


def table(data: str, results: Path = VALIDATION) -> str | None:
    """The data set's rows: student and EMA-copy k-NN, linear probe, share of the teacher, the EMA's momentum."""
    from benchmarks.quality.records import duration, metrics
    from ssdistill.eval.tables import cell

    found = {row: json.loads(record_path(results, data, row).read_text()) for row in ROWS if record_path(results, data, row).is_file()}
    if not found:
        return None
    first = next(iter(found.values()))
    teacher, random_init = metrics(first, "teacher"), metrics(first, "random_init")
    lines = [
        f"{DATASETS[data][0]}; {EPOCHS} epochs, seed 0. Teacher k-NN {cell(teacher['k20'])}, linear {cell(teacher['linear'])}; "
        f"a random-init student {cell(random_init['k20'])}. `{COMMAND} --data {data}`",
        "",
        "| row | k-NN k20 | linear | % of teacher (k-NN) | EMA copy k-NN k20 | EMA momentum | train time |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row, record in found.items():
        student = metrics(record, "student")
        ema = metrics(record, "student_ema") if "student_ema" in (record.get("knn") or {}) else {}
        momentum = (record.get("training") or {}).get("ema_momentum")
        if momentum is None and ema:  # a record from before the run record gave the momentum
            momentum = (record.get("config") or {}).get("trainer", {}).get("ema_momentum")
        pct = 100 * student["k20"] / teacher["k20"] if teacher["k20"] else None
        lines.append(
            f"| {ROWS[row][0]} | {cell(student['k20'])} | {cell(student['linear'])} | {cell(pct, 0)} | {cell(ema.get('k20'))} | "
            f"{'–' if momentum is None else f'{momentum:.4f}'} | {duration((record.get('timing') or {}).get('train_seconds'))} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, choices=sorted(DATASETS))
    parser.add_argument("--only", nargs="*", choices=sorted(ROWS), help="rows by name (default: all)")
    parser.add_argument("--table-only", action="store_true", help="render the table from the records, train nothing")
    parser.add_argument("--docs", action="store_true", help="also fill docs/benchmarks.md's block validation-<data>")
    parser.add_argument("--results", type=Path, default=VALIDATION)
    parser.add_argument("--runs", type=Path, default=None, help="folder of the rows' runs (default: runs/)")
    parser.add_argument("--force", action="store_true", help="measure rows on record again")
    args = parser.parse_args(argv)
    if not args.table_only:
        measure(args.data, args.only or list(ROWS), args.results, args.runs, args.force)
    from benchmarks.quality import show_table

    marker = f"bench:validation-{args.data}" if args.docs else None
    if args.docs and args.results != VALIDATION:
        raise SystemExit("--docs renders the committed records only: leave --results out")
    return show_table(table(args.data, args.results), f"{COMMAND} --data {args.data}", marker)


if __name__ == "__main__":
    raise SystemExit(main())
