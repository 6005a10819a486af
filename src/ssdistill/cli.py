"""Command line: ``ssdistill distill | eval | list``."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from ssdistill.distributed import is_global_zero
from ssdistill.errors import Interrupted, SsdistillError, one_line
from ssdistill.files import NO_SPACE, NOT_WRITABLE


def _options_epilog() -> str:
    from ssdistill.recipe import describe_options

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
    distill.add_argument(
        "--recipe", help="a shipped recipe laid under the config and the overrides, e.g. `recommended` (`ssdistill list` shows them)"
    )
    distill.add_argument(
        "--resume", metavar="RUN_DIR", help="continue a killed run from RUN_DIR/checkpoints/last.ckpt (or extend it: trainer.epochs=N)"
    )
    distill.add_argument(
        "--force", action="store_true", help="with --resume: accept overrides that change what is trained (recorded in results.json)"
    )
    distill.add_argument("overrides", nargs="*", metavar="key=value", help="override any option, e.g. trainer.epochs=5")

    evaluate = commands.add_parser(
        "eval",
        help="evaluate a run's student next to its teacher and random init (k-NN, linear probe, few-shot, clustering)",
        description="Full evaluation of a distillation run or checkpoint next to its teacher and a random-init student "
        "(both k-NN protocols, linear probe, 1 %%/10 %% few-shot, k-means clustering, params, FLOPs, images/s; written to "
        "RUN/evaluation.json), or k-NN of a teacher / timm model alone (--teacher with --train/--val).",
    )
    evaluate.add_argument("run", nargs="?", help="run directory made by `ssdistill distill`")
    evaluate.add_argument("--checkpoint", help="a checkpoint of a run (default: RUN/checkpoints/last.ckpt)")
    evaluate.add_argument("--teacher", help="evaluate this built-in teacher or timm name instead of a run")
    evaluate.add_argument("--weights", help="local weights file for --teacher (default: hub / built-in)")
    evaluate.add_argument(
        "--resolution", type=int, help="input side for --teacher, e.g. a student's, to see what its features are worth there (default: its own)"
    )
    evaluate.add_argument("--train", help="labelled memory set (default: the run's data.train)")
    evaluate.add_argument("--val", help="labelled evaluation split (default: the run's data.val)")
    evaluate.add_argument("--k", type=int, default=20, help="k-NN neighbours (default: 20)")
    evaluate.add_argument("--t", type=float, default=0.07, help="k-NN temperature (default: 0.07)")
    evaluate.add_argument("--batch-size", type=int, default=256, help="feature-extraction batch (default: 256)")
    evaluate.add_argument("--num-workers", type=int, default=2, help="data-loading workers (default: 2)")
    evaluate.add_argument("--knn-only", action="store_true", help="a run: only k-NN (skip linear probe, few-shot, clustering)")
    evaluate.add_argument("--markdown", action="store_true", help="print the table as markdown (for a README)")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")

    cache = commands.add_parser(
        "cache",
        help="fill, list or remove teacher embedding cache entries",
        description="Fill the teacher cache (`ssdistill cache --teacher NAME --data DIR [--data DIR2]`, or every entry a run of a "
        "config reads, banks included: `ssdistill cache --config CONFIG [key=value ...]`; processes started side by side share "
        "the work), list entries (`ssdistill cache ls`) or remove them (`ssdistill cache rm NAME|all`).",
    )
    cache.add_argument("action", nargs="?", choices=("fill", "ls", "rm"), default="fill", help="what to do (default: fill)")
    cache.add_argument("names", nargs="*", help="entries to remove (name or unique prefix, or all); with --config: key=value overrides")
    cache.add_argument("--config", help="fill the entries a run of this config reads (original views and banks), without training")
    cache.add_argument("--teacher", help="built-in teacher or timm name")
    cache.add_argument("--weights", help="local weights file for --teacher")
    cache.add_argument("--output", default="pooled", help="teacher tap: pooled (default), logits or module:<name>")
    cache.add_argument("--data", action="append", default=[], help="image folder or torchvision name; repeat for several")
    cache.add_argument("--batch-size", type=int, default=256, help="teacher batch (default: 256)")
    cache.add_argument("--num-workers", type=int, default=2, help="data-loading workers (default: 2)")
    cache.add_argument("--dir", help="cache folder (default: $SSDISTILL_CACHE_DIR or ~/.cache/ssdistill/teacher-cache)")
    cache.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="storage precision (default: float16)")

    export = commands.add_parser(
        "export",
        help="write a run's student in timm's Hub layout (model.safetensors, config.json, README.md model card); optionally ONNX, Hub upload",
        description="Export the student of RUN_DIR to RUN_DIR/export/: model.safetensors, config.json and a README.md model card, "
        "loadable with timm.create_model('local-dir:RUN_DIR/export', pretrained=True); --onnx also writes student.onnx "
        "(normalisation included, checked against PyTorch with onnxruntime); --push-to-hub USER/NAME uploads the folder.",
    )
    export.add_argument("run", help="run directory made by `ssdistill distill`")
    export.add_argument("--checkpoint", help="a checkpoint of the run (default: RUN/checkpoints/last.ckpt)")
    export.add_argument("--output", help="output folder (default: RUN/export; RUN/export/MEMBER for a member of a cohort)")
    export.add_argument("--onnx", action="store_true", help="also write student.onnx")
    export.add_argument("--member", help="which student of a cohort to export (default: the run's first student)")
    export.add_argument(
        "--allow-unfinished", action="store_true", help="export a run that has not trained all its epochs (config.json records how many it has)"
    )
    export.add_argument(
        "--push-to-hub", metavar="USER/NAME", help="upload the export folder to this Hugging Face Hub repository (created if missing)"
    )
    export.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository private")
    export.add_argument(
        "--overwrite", action="store_true", help="write into a folder that holds other files (those of the export's names are replaced)"
    )
    export.add_argument(
        "--license", dest="licence", help="licence the model card gives the weights (default: other; they derive from the teachers' weights and data)"
    )

    report = commands.add_parser(
        "report",
        help="one self-contained HTML page (tables, curves, feature maps, config) for one or several runs",
        description="Write an HTML report of one run (RUN/report.html) or a comparison of several (./report.html): results "
        "table, loss / learning-rate / k-NN curves, 2-D feature maps of student and teacher, resolved config. "
        "`ssdistill eval RUN` first gives the full table and the feature maps.",
    )
    report.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories made by `ssdistill distill`")
    report.add_argument("--output", help="HTML file to write")
    report.add_argument("--markdown", action="store_true", help="print a markdown table instead (for a README)")

    commands.add_parser("list", help="list methods and built-in teachers")
    return parser


def _print_list() -> None:
    from ssdistill.methods.registry import METHODS
    from ssdistill.models.teachers import BUILTIN_TEACHERS

    print("methods (method.preset=official reproduces the official code where there is one):")
    for name, method in METHODS.items():
        official = " [preset: official]" if method.config_class.official_values() else ""
        print(f"  {name:<20} {method.description}{official}")
    from ssdistill.recipe import RECIPES, recipe_names

    print("recipes (ssdistill distill --recipe NAME, laid under --config and key=value overrides):")
    for name in recipe_names():
        first = (RECIPES / f"{name}.yaml").read_text().splitlines()[0].lstrip("# ")
        print(f"  {name:<20} {first}")
    print("built-in teachers (any timm name works too, with hub or local weights):")
    for name, teacher in BUILTIN_TEACHERS.items():
        print(f"  {name:<20} {teacher.description}")


def _cache(args: argparse.Namespace) -> None:
    from ssdistill.cache.store import cache_root, list_entries, remove_entries

    if args.action == "ls":
        entries = list_entries(args.dir)
        print(f"cache: {cache_root(args.dir)}")
        for e in entries:
            shape = "x".join(map(str, e.get("shape", []))) or "?"
            what = {
                "complete": f"{e.get('teacher', '?')} {e.get('tap', '')} on {e.get('dataset', '?')}",
                "damaged": "manifest damaged: the next run that reads the entry rebuilds it, or `ssdistill cache rm` removes it",
            }.get(e["state"], "")
            print(f"  {e['name']:<48} {e['state']:<9} {shape:>12} {e['bytes'] / 2**20:>9.1f} MB  {what}")
        print(f"{len(entries)} entries, {sum(e['bytes'] for e in entries) / 2**20:.1f} MB")
        return
    if args.action == "rm":
        if not args.names:
            raise SsdistillError("ssdistill cache rm needs entry names (see `ssdistill cache ls`) or `all`")
        removed = remove_entries(args.names, args.dir)
        if not removed:
            raise SsdistillError(f"no cache entry matches {' '.join(args.names)}; `ssdistill cache ls` lists them")
        print("removed " + ", ".join(removed))
        return
    if args.config:
        if args.teacher or args.data:
            raise SsdistillError("ssdistill cache --config fills what the config's run reads: drop --teacher / --data (or --config)")
        from ssdistill.api import fill_run_cache

        for name, record in fill_run_cache(args.config, args.names).items():
            print(f"signal {name}: teacher '{record['teacher']}', tap {record['tap']}, {record['view']} view, from {record['from']}")
        return
    if args.names:
        raise SsdistillError(f"unexpected {' '.join(args.names)}: entry names go with `ssdistill cache rm`, key=value overrides with --config")
    if not args.teacher or not args.data:
        raise SsdistillError("ssdistill cache needs --teacher NAME and at least one --data PATH, or --config CONFIG (or the ls / rm action)")
    from ssdistill.api import fill_cache

    for row in fill_cache(
        args.teacher,
        args.data,
        weights=args.weights,
        output=args.output,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        cache_dir=args.dir,
        dtype=args.dtype,
    ):
        print(f"{row['data']}: {row['shape'][0]} x {row['shape'][1]} in {row['seconds']:.1f} s ({row['images_per_s']:.0f} images/s)")


class _Stderr(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a record is logged (``main`` called in-process more than
    once, under a test's captured streams, must neither repeat lines nor write to a closed stream)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass

    def filter(self, record: logging.LogRecord) -> bool:
        """Warnings once per run, not once per DDP process: only the first process of a launch shows them."""
        return (record.levelno >= logging.ERROR or is_global_zero()) and super().filter(record)


def main(argv: list[str] | None = None) -> None:
    package = logging.getLogger("ssdistill")
    if not any(isinstance(h, _Stderr) for h in package.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        package.addHandler(handler)
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # `cache --config CONFIG key=value`: argparse leaves positionals after an option over, as for no other command
        if args.command != "cache" or not getattr(args, "config", None):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.names = [*args.names, *extra]
    # SIGTERM (a scheduler's preemption) outside training ends like Ctrl-C, with exit code 143; while training,
    # Lightning's own handler finishes the batch and saves the run first (engine/trainer.py fit)
    main_thread = threading.current_thread() is threading.main_thread()
    previous_sigterm = signal.signal(signal.SIGTERM, _terminated) if main_thread else None
    try:
        if args.command == "list":
            _print_list()
        elif args.command == "cache":
            _cache(args)
        elif args.command == "report":
            from ssdistill.report.html import build_report, markdown_report

            if args.markdown:
                print(markdown_report(args.runs))
            else:
                written = build_report(args.runs, args.output)
                if len(args.runs) == 1:  # a run's report goes to its trackers too (run.loggers: MLflow, W&B)
                    from ssdistill.runs.load import send_to_run_trackers

                    send_to_run_trackers(args.runs[0], [written])
                print(f"report: {written}")
        elif args.command == "export":
            from ssdistill.export import export_run

            written = export_run(
                args.run,
                args.checkpoint,
                args.output,
                args.onnx,
                args.member,
                args.allow_unfinished,
                args.push_to_hub,
                args.private,
                args.licence,
                args.overwrite,
            )
            for what, path in written.items():
                print(f"{what}: {path}")
            where = f"hf-hub:{args.push_to_hub}" if args.push_to_hub else f"local-dir:{written['config'].parent}"
            print(f"load it with: timm.create_model('{where}', pretrained=True)")
        elif args.command == "distill":
            from ssdistill.api import distill

            if args.resume and args.config:
                raise SsdistillError("--resume uses the run's own config.yaml; drop --config (key=value overrides still apply)")
            if args.resume and args.recipe:
                raise SsdistillError("--resume uses the run's own config.yaml; drop --recipe (key=value overrides still apply)")
            overrides = [*args.overrides, f"recipe={args.recipe}"] if args.recipe else args.overrides
            distill(args.config, overrides=overrides, resume=args.resume, force=args.force)
        elif args.command == "eval":
            from ssdistill.api import evaluate

            found = evaluate(
                args.run,
                checkpoint=args.checkpoint,
                teacher=args.teacher,
                weights=args.weights,
                resolution=args.resolution,
                train=args.train,
                val=args.val,
                k=args.k,
                temperature=args.t,
                full=not args.knn_only,
                batch_size=args.batch_size,
                num_workers=args.num_workers,
            )
            if args.json:
                print(json.dumps(found, indent=2))
            elif args.run or args.checkpoint:
                from ssdistill.eval.tables import markdown_table, model_rows, text_table

                header, rows = model_rows(found)
                print((markdown_table if args.markdown else text_table)(header, rows))
                print(f"(evaluated on {found['data']['val']}; written to {Path(found['run_dir']) / 'evaluation.json'})")
            else:
                print(f"{'model':<24}{'px':>5}{'k-NN top-1':>11}{'top-5':>8}{'images/s':>10}")
                for name, row in found.items():
                    print(f"{name:<24}{row['resolution']:>5}{row['top1']:>10.1f}%{row.get('top5', float('nan')):>7.1f}%{row['images_per_s']:>10.0f}")
    except SsdistillError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # the file system said no (permissions, a full disk, a file where a folder belongs)
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}; check that the folder is writable and has space", file=sys.stderr)
        sys.exit(2 if exc.errno in (*NO_SPACE, *NOT_WRITABLE) else 1)  # the user's disk or folder, as other bad input
    except KeyboardInterrupt as exc:
        if is_global_zero():  # once, not per DDP process
            plain = "a run resumes with `ssdistill distill --resume RUN_DIR`, a cache fill where it stopped"
            print(f"interrupted: {exc if isinstance(exc, Interrupted) else plain}", file=sys.stderr)
        sys.exit(exc.exit_code if isinstance(exc, Interrupted) else 130)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous_sigterm)


def _terminated(signum, frame) -> None:
    raise Interrupted("SIGTERM; a run resumes with `ssdistill distill --resume RUN_DIR`, a cache fill where it stopped", 143)


if __name__ == "__main__":
    main()
