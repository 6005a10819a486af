"""Which of the teacher's directions a student holds: the reading behind MV-MR's distillation (docs/methods/mvmr.md).

    python -m benchmarks.teacher_directions RUN[=LABEL] [RUN ...] [--components 10] [--out FILE.json] [--docs]
    python -m benchmarks.teacher_directions --table-only --docs     # render the record on file into the method page

For the teacher of the first run (every run must have the same teacher and data), on its original-view features of the
run's k-NN memory (the training images) and of its evaluation split:

* the share of the variance of each of its first principal directions (fitted on the memory);
* for its first k directions alone (k = 1, 2, 3, 5 and ``--components``): the bias-corrected dCor² of that projection
  with the whole teacher embedding on validation images, and its k-NN top-1, so that a dCor² figure can be read as how
  many of the teacher's directions it takes;

and for the random-init student and each run's trained student (the backbone's pooled features, what is evaluated
and exported): k-NN top-1, dCor² with the teacher, the effective rank of its features on the validation images (and
its first principal direction's share of their variance: a collapsed student has most of it on one), and for each
teacher direction the R² with which a ridge regression
from the student's features (fitted on the memory, scored on the validation images) predicts it. A student that holds
one direction of the teacher and not the others has a high R² on the first and about the random-init student's on the
rest.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import torch

COMMAND = "python -m benchmarks.teacher_directions"
PREFIXES = (1, 2, 3, 5)
RECORD = Path(__file__).resolve().parent / "results" / "mvmr_study" / "directions-q2.json"  # the Q2 reading on the MV-MR page
DOCS_BLOCK = "bench:mvmr-directions"


def principal_directions(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean [D], directions [D, D] as rows, largest variance first, variance shares [D]) of ``features`` [N, D]."""
    x = features.double()
    mean = x.mean(0)
    _, singular, rows = torch.linalg.svd(x - mean, full_matrices=False)
    variance = singular**2
    return mean, rows, variance / variance.sum()


def ridge_r2(train: torch.Tensor, val: torch.Tensor, train_targets: torch.Tensor, val_targets: torch.Tensor, ridge: float = 1e-2) -> torch.Tensor:
    """R² per target column on ``val`` of a ridge regression fitted on ``train`` (features standardised on ``train``,
    penalty ``ridge`` x N, an unpenalised-in-spirit intercept column)."""
    x, v = train.double(), val.double()
    mean, std = x.mean(0), x.std(0) + 1e-6
    x = torch.cat([(x - mean) / std, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    v = torch.cat([(v - mean) / std, torch.ones(len(v), 1, dtype=v.dtype)], 1)
    weights = torch.linalg.solve(x.T @ x + ridge * len(x) * torch.eye(x.shape[1], dtype=x.dtype), x.T @ train_targets.double())
    residual = ((v @ weights - val_targets.double()) ** 2).sum(0)
    return 1 - residual / ((val_targets.double() - val_targets.double().mean(0)) ** 2).sum(0)


def effective_rank(features: torch.Tensor) -> tuple[float, float]:
    """(effective rank, the first principal direction's share of the variance) of ``features`` [N, D]: the exponential
    of the entropy of the variance shares of its principal directions (Roy and Vetterli), 1 for features on a line and D
    for isotropic ones."""
    _, _, share = principal_directions(features)
    entropy = -(share * share.clamp_min(1e-30).log()).sum()
    return float(entropy.exp()), float(share[0])


def dcor2(features: torch.Tensor, teacher: torch.Tensor) -> tuple[float, int]:
    """(bias-corrected dCor², rows used): the evaluation's teacher alignment, on its seeded subset of the rows."""
    from ssdistill.eval.alignment import teacher_alignment

    alignment = teacher_alignment(features, teacher, seed=0)
    return alignment["dcor2"], alignment["samples"]


def teacher_profile(memory: torch.Tensor, val: torch.Tensor, memory_labels, val_labels, components: int) -> tuple[dict, tuple, int]:
    """(the profile, the basis (mean, first ``components`` directions) the students' R² is measured in, the rows the
    dCor² figures use)."""
    from ssdistill.eval.knn import knn_accuracy

    mean, directions, share = principal_directions(memory)
    prefixes = []
    for k in sorted({*PREFIXES, components}):
        top_memory, top_val = ((memory - mean) @ directions[:k].T).float(), ((val - mean) @ directions[:k].T).float()
        dependence, samples = dcor2(top_val, val)
        # a cosine k-NN of a single number sees only its sign: no k-NN for the first direction alone
        knn = knn_accuracy(top_memory, memory_labels, top_val, val_labels, 20, 0.07)["top1"] if k > 1 else None
        prefixes.append({"directions": k, "dcor2_with_teacher": dependence, "knn": knn})
    return {"variance_share": share[:components].tolist(), "prefixes": prefixes}, (mean, directions[:components]), samples


def student_profile(memory, val, teacher_memory, teacher_val, basis, memory_labels, val_labels) -> dict:
    from ssdistill.eval.knn import knn_accuracy

    mean, directions = basis
    r2 = ridge_r2(memory, val, (teacher_memory - mean) @ directions.T, (teacher_val - mean) @ directions.T)
    return {
        "knn": knn_accuracy(memory, memory_labels, val, val_labels, 20, 0.07)["top1"],
        "dcor2_with_teacher": dcor2(val, teacher_val)[0],
        "r2_per_direction": [float(x) for x in r2],
        **dict(zip(("effective_rank", "first_direction_share"), effective_rank(val))),
    }


def measure(runs: list[Path], components: int = 10, labels: list[str] | None = None) -> dict:
    from ssdistill.api import teacher_split_features
    from ssdistill.data.datasets import seeded_subset
    from ssdistill.data.views import original_view
    from ssdistill.engine.provider import open_split
    from ssdistill.eval.features import extract_features
    from ssdistill.recipe import build_config
    from ssdistill.runs.load import build_student, load_student_from_run

    first = build_config(Path(runs[0]) / "config.yaml")
    data, seed = first.data, first.trainer.seed
    if data.knn_train:
        memory_source, memory_teacher = open_split(first, data.knn_train), teacher_split_features(first, data.knn_train)
    else:
        memory_source = seeded_subset(open_split(first, data.train), data.train_subset, seed)
        table = teacher_split_features(first, data.train)
        memory_teacher = table[memory_source.positions] if hasattr(memory_source, "positions") else table
    val_source, val_teacher = open_split(first, data.val), teacher_split_features(first, data.val)
    memory_labels, val_labels = torch.tensor(memory_source.labels), torch.tensor(val_source.labels)
    profile, basis, dcor_rows = teacher_profile(memory_teacher.float(), val_teacher.float(), memory_labels, val_labels, components)

    def features(student, resolution: int):
        view = original_view(resolution)
        return tuple(extract_features(student, source, view, data.eval_batch_size, 0, "cpu", "features") for source in (memory_source, val_source))

    students = {"random_init": (build_student(first.student, seed), first.student.resolution)}
    for run, label in zip(runs, labels or [Path(r).name for r in runs]):
        cfg, student = load_student_from_run(run)
        if (cfg.data.train, cfg.data.val, cfg.data.train_subset, cfg.primary_teacher, dict(cfg.teachers)) != (
            data.train,
            data.val,
            data.train_subset,
            first.primary_teacher,
            dict(first.teachers),
        ):
            raise SystemExit(f"{run} has another teacher or other data than {runs[0]}: compare runs of one teacher and one data set")
        students[label] = (student, cfg.student.resolution)
    models = {}
    for label, (student, resolution) in students.items():
        memory, val = features(student, resolution)
        models[label] = student_profile(memory, val, memory_teacher.float(), val_teacher.float(), basis, memory_labels, val_labels)
    return {"teacher": profile, "models": models, "runs": [str(r) for r in runs], "dcor_rows": dcor_rows, "command": COMMAND}


def table(result: dict) -> str:
    teacher = result["teacher"]
    lines = [
        f"One seed each; dCor² on {result['dcor_rows']} validation images, R² on the whole evaluation split. `{result['command']}`",
        "",
        "| teacher's first k directions | " + " | ".join(str(p["directions"]) for p in teacher["prefixes"]) + " |",
        "| --- |" + " ---: |" * len(teacher["prefixes"]),
        "| dCor² with the whole teacher | " + " | ".join(f"{p['dcor2_with_teacher']:.2f}" for p in teacher["prefixes"]) + " |",
        "| k-NN k20 | " + " | ".join("–" if p["knn"] is None else f"{p['knn']:.1f}" for p in teacher["prefixes"]) + " |",
        "",
    ]
    n = len(teacher["variance_share"])
    lines += [
        "| model | k-NN k20 | dCor² | effective rank (first direction's share) | " + " | ".join(f"R² d{i + 1}" for i in range(n)) + " |",
        "| --- | ---: | ---: | ---: |" + " ---: |" * n,
        "| (teacher variance share) | | | | " + " | ".join(f"{s:.2f}" for s in teacher["variance_share"]) + " |",
    ]
    for label, row in result["models"].items():
        r2 = " | ".join(f"{x:.2f}" for x in row["r2_per_direction"])
        rank = f"{row['effective_rank']:.1f} ({row['first_direction_share']:.2f})"
        lines.append(f"| {label} | {row['knn']:.1f} | {row['dcor2_with_teacher']:.2f} | {rank} | {r2} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", help="run directories (same teacher and data), each optionally =LABEL (its row's name)")
    parser.add_argument("--components", type=int, default=10, help="teacher directions to report (default 10)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--table-only", action="store_true", help=f"render the record (--out, default {RECORD.name}) and measure nothing")
    parser.add_argument("--docs", action="store_true", help=f"also fill the block {DOCS_BLOCK} of docs/methods/mvmr.md")
    args = parser.parse_args(argv)
    if args.table_only:
        record = args.out or RECORD
        if not record.is_file():
            raise SystemExit(f"no record at {record}: measure it first ({COMMAND} RUN ... --out {record})")
        result = json.loads(record.read_text())
    elif not args.runs:
        raise SystemExit("name at least one run directory, or pass --table-only to render a record")
    else:
        paths = [Path(run.split("=", 1)[0]) for run in args.runs]
        labels = [run.split("=", 1)[1] if "=" in run else Path(run).name for run in args.runs]
        result = measure(paths, args.components, labels)
        result["command"] = " ".join([COMMAND, *map(shlex.quote, args.runs), f"--components {args.components}"])
    if args.out and not args.table_only:
        from ssdistill.files import atomic_output

        args.out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(args.out) as tmp:
            Path(tmp).write_text(json.dumps(result, indent=1))
    markdown = table(result)
    print(markdown)
    if args.docs:
        from benchmarks.quality.docs import replace_block
        from benchmarks.quality.paths import REPO

        replace_block(REPO / "docs" / "methods" / "mvmr.md", DOCS_BLOCK, f"{markdown}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
