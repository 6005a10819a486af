"""The teacher's own k-NN at a student's input size: a ceiling diagnostic for the recipe ablation (issue 23).

A student that sees 96-px images is measured, like every row, at 96 px, while its teacher is measured at its own
224 px. How much of the gap is the resolution alone? The teacher's pooled features of the same images resized to the
student's side answer that: a student distilled at 96 px can hardly hold more of the class structure than the teacher
itself holds at 96 px.

    python -m benchmarks.teacher_resolution                       # Q1: EfficientNet-Lite0 at 64, 96, 128, 160 and 224 px
    python -m benchmarks.teacher_resolution --table-only --docs # re-render the table (and its block in docs/benchmarks.md)

Each side is written to benchmarks/results/<bench>/teacher_resolution-cpu.json as soon as it is measured and is not
measured again (``--force`` does); the same figure for one side is
``ssdistill eval --teacher NAME --train DIR --val DIR --resolution SIDE``.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SIDES = (64, 96, 128, 160, 224)
K, T = 20, 0.07  # the k-NN protocol of every bench table


def _setting(bench: str) -> dict:
    """Teacher and data of the bench's feature-regression recipe (its student's side too)."""
    cfg = yaml.safe_load((REPO / "configs" / bench / "feature.yaml").read_text())
    return {
        "teacher": cfg["teacher"]["name"],
        "train": str(REPO / cfg["data"]["train"]),
        "val": str(REPO / cfg["data"]["val"]),
        "student_side": cfg["student"]["resolution"],
    }


def path(bench: str, results_dir: Path = RESULTS) -> Path:
    return Path(results_dir) / bench / "teacher_resolution-cpu.json"


def measure(bench: str, sides: list[int], force: bool = False, results_dir: Path = RESULTS) -> dict:
    from ssdistill import evaluate
    from ssdistill.engine.records import versions
    from ssdistill.files import atomic_write_text

    setting = _setting(bench)
    out = path(bench, results_dir)
    record = json.loads(out.read_text()) if out.is_file() else {"bench": bench, **setting, "rows": {}}
    for side in sides:
        if str(side) in record["rows"] and not force:
            continue
        row = evaluate(teacher=setting["teacher"], resolution=side, train=setting["train"], val=setting["val"], k=K, temperature=T, full=False)[
            setting["teacher"]
        ]
        record["rows"][str(side)] = {key: row[key] for key in ("top1", "top5", "images_per_s", "gflops", "resolution") if key in row}
        record["rows"][str(side)]["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        record["versions"] = versions()
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(record, indent=2))
        print(f"{setting['teacher']} at {side} px: k-NN top-1 {row['top1']:.1f}", flush=True)
    return record


def table(bench: str, results_dir: Path = RESULTS) -> str | None:
    out = path(bench, results_dir)
    if not out.is_file():
        return None
    record = json.loads(out.read_text())
    lines = [
        f"{bench.upper()}: the teacher ({record['teacher']}) alone, its pooled features of the training (memory) and evaluation images resized to each "
        f"side (k-NN k{K}, T {T}); the students see {record['student_side']} px; "
        f"`python -m benchmarks.teacher_resolution --bench {bench}`",
        "",
        "| teacher input side | k-NN top-1 | k-NN top-5 | GFLOPs / image |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for side, row in sorted(record["rows"].items(), key=lambda item: int(item[0])):
        gflops = f"{row['gflops']:.2f}" if "gflops" in row else "–"
        lines.append(f"| {side} px | {row['top1']:.1f} | {row.get('top5', float('nan')):.1f} | {gflops} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", default="q1", help="benchmark whose feature recipe gives teacher and data (default: q1)")
    parser.add_argument("--sides", type=int, nargs="+", default=list(SIDES), help="teacher input sides in px")
    parser.add_argument("--force", action="store_true", help="measure sides already on record again")
    parser.add_argument("--table-only", action="store_true", help="render the table from the record, measure nothing")
    parser.add_argument(
        "--docs", "--readme", dest="docs", action="store_true", help="also fill the docs/benchmarks.md block bench:<bench>-cpu-teacher-resolution"
    )
    args = parser.parse_args(argv)
    if not args.table_only:
        measure(args.bench, args.sides, args.force)
    from benchmarks.quality import show_table

    marker = f"bench:{args.bench}-cpu-teacher-resolution" if args.docs else None
    return show_table(table(args.bench), f"python -m benchmarks.teacher_resolution --bench {args.bench}", marker)


if __name__ == "__main__":
    sys.exit(main())
