"""Quality benchmarks (docs/benchmarks.md): one row per method and benchmark, one command per tier.

    python -m benchmarks.quality --tier cpu --bench q1               # every Q1 row (10-60 min each on 2 cores)
    python -m benchmarks.quality --tier cpu --bench q2 --only seed bingo
    python -m benchmarks.quality --tier smoke                         # CIFAR-10 slice, about a minute per method
    python -m benchmarks.quality --tier gpu --bench q1                # resnet18 at 224, on a machine with one GPU
    python -m benchmarks.quality --tier cpu --bench q1 --table-only --docs
    python -m benchmarks.quality --tier cpu --bench q1 --alignment --docs   # CKA / dCor² with the teacher, old rows

A row is an entry of benchmarks/rows.yaml: its recipe (``configs/<bench>/<row>.yaml`` unless the entry names another,
with the entry's overrides) and the tier's overrides. Each finished row is written to
``benchmarks/results/<bench>/<row>-<tier>.json`` as soon as it completes and is not recomputed unless ``--force``; an
interrupted row resumes from its run's last checkpoint. After every row the markdown table
``benchmarks/results/<bench>-<tier>.md`` is regenerated from the JSON files (``--docs`` also replaces the block of the
documentation's benchmarks page, docs/benchmarks.md, between ``<!-- bench:<bench>-<tier> -->`` and ``<!-- /bench:<bench>-<tier> -->``).

The smoke tier checks that learning happens and exits non-zero when a row fails its check (``smoke.check_row``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.quality import rows
from benchmarks.quality.paths import DOCS, RESULTS, row_path
from benchmarks.quality.rows import BENCHES
from benchmarks.quality.run import add_teacher_alignment, run_tier, write_json
from benchmarks.quality.smoke import check_row
from benchmarks.quality.tables import bench_table, write_table
from benchmarks.quality.tiers import TIERS


def main(argv: list[str] | None = None) -> int:
    names = rows.catalogue().names
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tier", choices=sorted(TIERS), required=True)
    parser.add_argument("--bench", nargs="+", choices=BENCHES, help="default: every benchmark of the tier")
    parser.add_argument("--only", nargs="+", choices=names, metavar="METHOD", help=f"rows to run, of {', '.join(names)}")
    parser.add_argument("--force", action="store_true", help="recompute finished rows (their run directories are deleted)")
    parser.add_argument("--table-only", action="store_true", help="only regenerate the markdown tables from the JSON files")
    parser.add_argument(
        "--alignment",
        action="store_true",
        help="fill teacher alignment (CKA, dCor² on val) into finished rows that lack it, then regenerate the tables",
    )
    parser.add_argument("--docs", "--readme", dest="docs", action="store_true", help="also replace the tables' blocks in docs/benchmarks.md")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the row JSON files and tables")
    parser.add_argument("--runs", type=Path, help="parent of the run directories (default: the recipe's run.dir)")
    parser.add_argument(
        "--seed",
        type=int,
        help="train the rows with trainer.seed=SEED, another seed of the same rows (their run "
        "directories end in -seedSEED, their rows are METHOD-seedSEED-TIER.json) in a results folder of their own, e.g. --results "
        "benchmarks/results/seeds",
    )
    args = parser.parse_args(argv)
    benches = args.bench or TIERS[args.tier].benches
    readme = DOCS if args.docs else None
    if args.alignment:
        for bench in benches:
            for method in names:
                path = row_path(args.results, bench, method, args.tier)
                if path.is_file() and add_teacher_alignment(record := json.loads(path.read_text())):
                    write_json(path, record)
                    print(f"{bench} {method}: teacher alignment added")
    if args.table_only or args.alignment:
        for bench in benches:
            print(write_table(bench, args.tier, args.results, readme))
        return 0
    if args.seed is not None and args.results.resolve() == RESULTS.resolve():
        raise SystemExit("--seed rows (METHOD-seedN-TIER.json) go to a folder of their own: add --results benchmarks/results/seeds")
    done = run_tier(
        args.tier, benches, args.only, results_dir=args.results, runs_dir=args.runs, force=args.force, quiet=False, readme=readme, seed=args.seed
    )
    for bench in benches:
        print(bench_table(bench, args.tier, args.results))
    if args.tier != "smoke":
        return 0
    failures = [f for (bench, method), record in done.items() for f in check_row(method, record)]
    for failure in failures:
        print(f"smoke check failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
