"""The demo figures of the benchmarks page (and the README's headline), from a run of the demo recipe (the run
`make demo` makes).

    python -m benchmarks.demo --docs              # run configs/demo/feature.yaml, rewrite the demo blocks and the headline
    python -m benchmarks.demo --table-only --docs # only re-render the blocks from benchmarks/results/demo-cpu.json

The run's results record (every figure, the machine with its CPU model and vector extensions, versions, seed) is
written to benchmarks/results/demo-cpu.json; the blocks of docs/benchmarks.md between ``<!-- demo:results -->`` and
``<!-- demo:output -->`` markers are rendered from it. Figures move by a few points from one CPU to another (the
seed spread of the same recipe is in benchmarks/results/spread-cpu.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from benchmarks.quality import DOCS, REPO, RESULTS, replace_block

RECIPE = REPO / "configs" / "demo" / "feature.yaml"
ROW = RESULTS / "demo-cpu.json"
TEACHER_LABEL = "teacher: EfficientNet-Lite0 (ImageNet-supervised), 224 px"


def run_demo() -> dict:
    from ssdistill import distill
    from ssdistill.eval.tables import format_summary

    with tempfile.TemporaryDirectory() as runs:  # an empty teacher cache too: the figures of a first `make demo`
        record = distill(
            RECIPE, trainer={"progress_bar": False}, run={"dir": runs, "name": "demo"}, cache={"dir": str(Path(runs) / "cache")}, quiet=True
        )
        # the summary as `make demo` prints it, with the run directory it would have there
        record["printed"] = format_summary({**record, "run_dir": "runs/demo"})
    record.pop("run_dir", None)
    return record


def _count(value: float) -> str:
    return f"{value:,.0f}"


def results_block(record: dict) -> str:
    knn, timing, machine = record["knn"], record["timing"], record.get("machine") or {}
    teacher, random_init, student = knn["teacher"], knn["random_init"], knn["student"]
    cores = machine.get("cpus", "?")
    resolution = record["student"]["resolution"]
    lines = [
        f"| model | k-NN top-1 (k={record['protocol']['knn']['k']}, T={record['protocol']['knn']['temperature']}) | params | "
        f"images/s (forward, {cores} CPU cores) |",
        "| --- | ---: | ---: | ---: |",
        f"| {TEACHER_LABEL} | {teacher['top1']:.1f} % | {teacher['params_m']:.2f} M | {_count(teacher['images_per_s'])} |",
        f"| random-init student: MobileNetV3-Small, {resolution} px | {random_init['top1']:.1f} % | {random_init['params_m']:.2f} M | "
        f"{_count(random_init['images_per_s'])} |",
        f"| **distilled student** (feature distillation, {record['epochs']} epochs, {timing['train_seconds']:.0f} s of training) | "
        f"**{student['top1']:.1f} %** | {student['params_m']:.2f} M | {_count(student['images_per_s'])} |",
        "",
        f"The distilled student keeps {record['retained_pct']:.1f} % of the teacher's k-NN accuracy after {record['steps']} optimisation "
        f"steps on {record['data']['train_size']:,} images, and runs about {student['images_per_s'] / teacher['images_per_s']:.0f} times "
        f"faster than the teacher on this CPU. Measured {record['created'][:10]} by `python -m benchmarks.demo --docs` (the run "
        f"`make demo` makes; ssdistill {record['versions']['ssdistill']}, torch {record['versions']['torch']}) on "
        f"{cores} cores of an {machine.get('cpu_model', 'unknown CPU')} (torch dispatching to {machine.get('torch_cpu_capability', '?')}). "
        "Figures move by a few points from one CPU to another: the same seeds take other kernel paths, round differently, "
        "and the training trajectory follows; the seed spread of this recipe is in `benchmarks/results/spread-cpu.md`.",
    ]
    return "\n".join(lines) + "\n"


def output_block(record: dict) -> str:
    return "```\n" + record["printed"] + "\n```\n"


def write(record: dict, readme: Path | None) -> None:
    if readme is not None:
        replace_block(readme, "demo:results", results_block(record))
        replace_block(readme, "demo:output", output_block(record))


def main(argv: list[str] | None = None) -> int:
    from ssdistill.files import atomic_write_text

    parser = argparse.ArgumentParser(prog="python -m benchmarks.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--table-only", action="store_true", help="only re-render from benchmarks/results/demo-cpu.json")
    parser.add_argument(
        "--docs", "--readme", dest="docs", action="store_true", help="rewrite the demo blocks of docs/benchmarks.md and the README's headline"
    )
    args = parser.parse_args(argv)
    if args.table_only:
        if not ROW.is_file():
            raise SystemExit(f"no {ROW.relative_to(REPO)} yet: run `python -m benchmarks.demo` first")
        record = json.loads(ROW.read_text())
    else:
        record = run_demo()
        ROW.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(ROW, json.dumps(record, indent=2))
    write(record, DOCS if args.docs else None)
    if args.docs:
        from benchmarks import headline

        headline.main([])
    print(results_block(record))
    print(output_block(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
