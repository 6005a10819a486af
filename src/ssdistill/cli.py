"""Command line: ``ssdistill distill | eval | list``."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ssdistill.errors import SsdistillError


def _options_epilog() -> str:
    from ssdistill.config import describe_options

    rows = describe_options()
    width = max(len(key) for key, _, _ in rows) + 2
    lines = ["options (set in the YAML recipe or as key=value; default shown):"]
    for key, default, description in rows:
        text = f"  {key:<{width}}{default:<22} {description}"
        lines.append(text if len(text) <= 200 else text[:196] + " ...")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssdistill", description="Label-free distillation of vision models.")
    commands = parser.add_subparsers(dest="command", required=True)

    distill = commands.add_parser(
        "distill",
        help="distil a teacher into a student and evaluate it",
        description="Distil a teacher into a student without labels, then report k-NN of teacher, random-init and distilled student.",
        epilog=_options_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    distill.add_argument("--config", help="YAML recipe (see configs/); default: built-in defaults")
    distill.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run from RUN_DIR/checkpoints/last.ckpt")
    distill.add_argument("overrides", nargs="*", metavar="key=value", help="override any option, e.g. trainer.epochs=5")

    evaluate = commands.add_parser(
        "eval",
        help="k-NN of a run's student (next to teacher and random init) or of a teacher/timm model",
        description="k-NN top-1/top-5 of a distillation run or checkpoint (with its teacher and a random-init student), "
        "or of a teacher / timm model alone (--teacher with --train/--val).",
    )
    evaluate.add_argument("run", nargs="?", help="run directory made by `ssdistill distill`")
    evaluate.add_argument("--checkpoint", help="a checkpoint of a run (default: RUN/checkpoints/last.ckpt)")
    evaluate.add_argument("--teacher", help="evaluate this built-in teacher or timm name instead of a run")
    evaluate.add_argument("--weights", help="local weights file for --teacher (default: hub / built-in)")
    evaluate.add_argument("--train", help="labelled memory set (default: the run's data.train)")
    evaluate.add_argument("--val", help="labelled evaluation split (default: the run's data.val)")
    evaluate.add_argument("--k", type=int, default=20, help="k-NN neighbours (default: 20)")
    evaluate.add_argument("--t", type=float, default=0.07, help="k-NN temperature (default: 0.07)")
    evaluate.add_argument("--batch-size", type=int, default=256, help="feature-extraction batch (default: 256)")
    evaluate.add_argument("--num-workers", type=int, default=2, help="data-loading workers (default: 2)")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")

    commands.add_parser("list", help="list methods and built-in teachers")
    return parser


def _print_list() -> None:
    from ssdistill.methods import METHODS
    from ssdistill.models.teachers import BUILTIN_TEACHERS

    print("methods:")
    for name, method in METHODS.items():
        print(f"  {name:<20} {method.description}")
    print("built-in teachers (any timm name works too, with hub or local weights):")
    for name, teacher in BUILTIN_TEACHERS.items():
        print(f"  {name:<20} {teacher.description}")


def main(argv: list[str] | None = None) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logging.getLogger("ssdistill").addHandler(handler)
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            _print_list()
        elif args.command == "distill":
            from ssdistill.api import distill

            if args.resume and args.config:
                raise SsdistillError("--resume uses the run's own config.yaml; drop --config (key=value overrides still apply)")
            distill(args.config, overrides=args.overrides, resume=args.resume)
        elif args.command == "eval":
            from ssdistill.api import evaluate

            knn = evaluate(
                args.run,
                checkpoint=args.checkpoint,
                teacher=args.teacher,
                weights=args.weights,
                train=args.train,
                val=args.val,
                k=args.k,
                temperature=args.t,
                batch_size=args.batch_size,
                num_workers=args.num_workers,
            )
            if args.json:
                print(json.dumps(knn, indent=2))
            else:
                print(f"{'model':<24}{'k-NN top-1':>11}{'top-5':>8}{'images/s':>10}")
                for name, row in knn.items():
                    print(f"{name:<24}{row['top1']:>10.1f}%{row.get('top5', float('nan')):>7.1f}%{row['images_per_s']:>10.0f}")
    except SsdistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
