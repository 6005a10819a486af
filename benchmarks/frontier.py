"""Which student for my budget: the recommended recipe, unchanged, distilled into students that span more than ten
times in deployed latency, each row's accuracy against its latency as a ratio to the teacher's.

    python -m benchmarks.frontier --tier cpu --bench q1 --plan   # the rows, their cost, the estimate of the whole
    python -m benchmarks.frontier --tier cpu --bench q1          # measure every unfinished row (resumable)
    python -m benchmarks.frontier --tier cpu --bench q1 --table-only --docs   # tables, plot, page from the records

The students, sides and schedule are data (benchmarks/frontier.yaml). A row is the bench's recommended config with
``student.arch``, ``student.resolution`` and ``trainer.epochs`` replaced, trained, resumed or read back like a quality
row, then evaluated in full (k-NN, linear probe, teacher and random init beside it). Its deployed latency: the run's
student exported to ONNX (``ssdistill export --onnx``) and the teacher exported the same way (normalisation included,
at its own input side), timed by onnxruntime in one process in interleaved rounds, at batch 1 and 32
(:mod:`ssdistill.eval.latency`); the row keeps the ratio, and the milliseconds beside the machine. Each row's record
is written to ``benchmarks/results/frontier/<bench>/<arch>-<side>-<tier>.json`` as soon as it is measured; the table,
the plot (inline in docs/benchmarks.md) and a self-contained page (benchmarks/results/frontier/<bench>-<tier>.html) are
rebuilt after each row.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from benchmarks.quality.paths import DOCS, REPO, RESULTS, SHARED_WEIGHTS

SPEC = REPO / "benchmarks" / "frontier.yaml"
FRONTIER = RESULTS / "frontier"
COMMAND = "python -m benchmarks.frontier"
BATCHES = (1, 32)
SMOKE_EPOCHS = 2
SMOKE_STUDENTS = (("cifar_resnet20", 32), ("mobilenetv3_small_050", 32))
GPU_SIDE, GPU_EPOCHS = 224, 100  # the gpu tier: the teacher's own side, the quality benchmarks' gpu schedule


@dataclass(frozen=True)
class Row:
    arch: str
    side: int

    @property
    def name(self) -> str:
        return f"{self.arch}-{self.side}"


@dataclass(frozen=True)
class Bench:
    name: str
    recipe: Path
    epochs: int
    budget_hours: float
    rows: tuple[Row, ...]
    calibration: dict | None  # {row, arch, side}: the recipe's own 60-epoch row of that student


def load_spec(bench: str, tier: str = "cpu", path: Path = SPEC) -> Bench:
    """The bench's frontier from benchmarks/frontier.yaml; the smoke tier: two cheap students at 32 px, 2 epochs."""
    spec = yaml.safe_load(Path(path).read_text())
    if tier == "smoke" and bench != "q2":
        raise SystemExit("the smoke tier of the frontier runs on the Q2 slice: --bench q2")
    if bench not in spec:
        raise SystemExit(f"{path.name} has no frontier for {bench}: one of {', '.join(spec)}")
    entry = spec[bench]
    rows = tuple(Row(s["arch"], int(side)) for s in entry["students"] for side in s["sides"])
    epochs = int(entry["epochs"])
    if tier == "smoke":
        rows, epochs = tuple(Row(a, s) for a, s in SMOKE_STUDENTS), SMOKE_EPOCHS
    if tier == "gpu":  # every student at 224 px for GPU_EPOCHS (scripts/gpu_frontier.sh)
        if bench != "q1":
            raise SystemExit("the gpu tier of the frontier is Q1's: --bench q1")
        rows, epochs = tuple(Row(a, GPU_SIDE) for a in dict.fromkeys(r.arch for r in rows)), GPU_EPOCHS
    return Bench(bench, REPO / entry["recipe"], epochs, float(entry.get("budget_hours", 0)), rows, entry.get("calibration"))


def record_path(results: Path, bench: str, row: Row, tier: str) -> Path:
    return Path(results) / bench / f"{row.name}-{tier}.json"


def overrides(spec: Bench, row: Row, tier: str, runs_dir: Path) -> dict:
    """The row's changes to the bench's recommended config (the smoke tier: the 600-image CIFAR-10 slice, k-NN only)."""
    changes = {
        "student": {"arch": row.arch, "resolution": row.side},
        "trainer": {"epochs": spec.epochs, "progress_bar": False},
        "eval": {"suite": "full", "monitor_every": 0},
        "run": {"dir": str(runs_dir), "name": f"{spec.name}-frontier-{row.name}" + ("" if tier == "cpu" else f"-{tier}")},
    }
    if tier == "smoke":
        from benchmarks.datasets import cifar10_slice
        from benchmarks.quality.tiers import SMOKE_IMAGES

        data = cifar10_slice(SMOKE_IMAGES)
        changes["data"] = {"train": str(data / "train"), "val": str(data / "test"), "train_subset": None, "batch_size": 64, "num_workers": 0}
        changes["teacher"] = {"weights": str(SHARED_WEIGHTS / "resnet56-4bfd9763.th")}
        changes["eval"] = {"suite": "knn", "monitor_every": 0}
    if tier == "gpu":  # as the quality benchmarks' gpu tier (benchmarks/quality/tiers.py)
        changes["student"]["channels_last"] = True
        changes["data"] = {"batch_size": 256, "num_workers": 8}
        changes["trainer"].update({"precision": "bf16-mixed", "accelerator": "gpu"})
    return changes


# ---------------------------------------------------------------------------------------------------------- the plan


def student_cost(arch: str, side: int, batch: int = 128, steps: int = 2) -> dict:
    """Parameters, GFLOPs per image and the measured seconds of one training step per image (forward and backward of
    the student alone on random images at ``batch``, the run's batch size, best of ``steps`` after one warm-up) on this
    machine, with torch's thread count as it is."""
    import torch

    from ssdistill.eval.features import model_flops
    from ssdistill.models.students import Student

    student = Student(arch, resolution=side)
    gflops = model_flops(student, side)
    images = torch.rand(batch, 3, side, side)
    best = math.inf
    for i in range(steps + 1):
        start = time.perf_counter()
        student(images).float().square().mean().backward()
        if i:  # the first is the warm-up
            best = min(best, time.perf_counter() - start)
    return {"params_m": sum(p.numel() for p in student.parameters()) / 1e6, "gflops": gflops, "step_s_per_image": best / batch}


def plan(spec: Bench, tier: str = "cpu", calibrate: dict | None = None) -> dict:
    """Every row's cost: GFLOPs x images x epochs, and a time estimate = epochs x images x (the measured training step
    per image of its student + the rest of a step per image, the data pipeline and the loss, taken from the bench's
    recipe row as the seconds per image of its batches less its student's step) + the recipe row's evaluation time.
    ``calibrate``: the recipe row's record (default: read from benchmarks/results/<bench>/<calibration row>-cpu.json)."""
    import torch

    from ssdistill.recipe import build_config

    cfg = build_config(spec.recipe, overrides(spec, spec.rows[0], tier, REPO / "runs"))
    images, batch = train_images(cfg), cfg.data.batch_size
    rows = []
    for row in spec.rows:
        cost = student_cost(row.arch, row.side, batch)
        rows.append({"row": row.name, "arch": row.arch, "side": row.side, **cost, "gflops_total": cost["gflops"] * 3 * images * spec.epochs})
    record = calibrate if calibrate is not None else _calibration_record(spec)
    overhead, evaluation, source = 0.0, 0.0, "the students' measured steps alone (no recipe row on record)"
    if record is not None:
        student, timing = record["student"], record["timing"]
        # the batches' own time: a row's train_seconds also holds its k-NN monitor, which frontier rows do not run
        seconds = sum(timing["epoch_train_seconds"]) if timing.get("epoch_train_seconds") else timing["train_seconds"]
        per_image = seconds / (record["epochs"] * record["data"]["train_size"])
        own = student_cost(student["arch"], student["resolution"], batch)["step_s_per_image"]
        overhead, evaluation = max(0.0, per_image - own), timing.get("eval_seconds") or 0.0
        source = (
            f"the recipe row's {per_image * 1000:.1f} ms per image (its batches) of which its student's step is {own * 1000:.1f} ms "
            f"now, plus its {evaluation:.0f} s of evaluation per row"
        )
    for row in rows:
        row["hours"] = (spec.epochs * images * (row["step_s_per_image"] + overhead) + evaluation) / 3600
    return {
        "bench": spec.name,
        "tier": tier,
        "epochs": spec.epochs,
        "images": images,
        "batch_size": batch,
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "rows": rows,
        "hours": sum(r["hours"] for r in rows),
        "budget_hours": spec.budget_hours,
        "source": source,
    }


def _calibration_record(spec: Bench) -> dict | None:
    name = (spec.calibration or {}).get("row", "recommended")
    path = RESULTS / spec.name / f"{name}-cpu.json"
    return json.loads(path.read_text()) if path.is_file() else None


def train_images(cfg) -> int:
    from ssdistill.data.datasets import open_images

    size = len(open_images(str(cfg.data.train)))
    return min(size, cfg.data.train_subset) if cfg.data.train_subset else size


def print_plan(p: dict) -> None:
    print(f"frontier {p['bench']} ({p['tier']}): {len(p['rows'])} rows, {p['epochs']} epochs of {p['images']} images each")
    print(f"{'row':<30} {'params M':>9} {'GFLOPs':>8} {'step ms/img':>12} {'est. hours':>11}")
    for r in p["rows"]:
        print(f"{r['row']:<30} {r['params_m']:>9.2f} {r['gflops']:>8.3f} {r['step_s_per_image'] * 1000:>12.2f} {r['hours']:>11.2f}")
    fits = "within" if not p["budget_hours"] or p["hours"] <= p["budget_hours"] else "OVER"
    print(f"estimate: {p['hours']:.1f} h in all ({fits} the budget of {p['budget_hours']:g} h); from {p['source']}")
    print(f"(steps measured with {p['torch_threads']} torch threads at a load average of {p['load_average']}: a busy machine inflates them)")


# ------------------------------------------------------------------------------------------------------- measuring


def measure_row(spec: Bench, row: Row, tier: str, results: Path = FRONTIER, runs_dir: Path | None = None, force: bool = False) -> dict:
    """Train (or resume, or read back) one row, measure its deployed latency against the teacher's and write its
    record; a row already on record is read back."""
    from benchmarks.quality.run import train_or_resume, write_json

    out = record_path(results, spec.name, row, tier)
    if out.is_file() and not force:
        return json.loads(out.read_text())
    runs_dir = Path(runs_dir) if runs_dir is not None else REPO / "runs"
    changes = overrides(spec, row, tier, runs_dir)
    run_dir = runs_dir / changes["run"]["name"]
    record = train_or_resume(spec.recipe, changes, run_dir, force=force)
    record["latency"] = deployed_latency(run_dir, runs_dir / f"{spec.name}-frontier-teacher{'' if tier == 'cpu' else '-' + tier}.onnx")
    record["frontier"] = {
        "bench": spec.name,
        "tier": tier,
        "row": row.name,
        "arch": row.arch,
        "side": row.side,
        "epochs": record["epochs"],  # what the run trained (train_or_resume refuses a run of another config)
        "recipe": str(spec.recipe.relative_to(REPO)),
        "command": f"{COMMAND} --tier {tier} --bench {spec.name} --only {row.name}",
    }
    write_json(out, record)
    return record


def teacher_onnx(run_dir: Path, path: Path) -> tuple[Path, int]:
    """The run's teacher (its preprocessing included: images in [0, 1] at its own side) exported to ONNX once."""
    from ssdistill.export import export_onnx
    from ssdistill.files import atomic_write_text
    from ssdistill.models.teachers import build_teacher
    from ssdistill.recipe import build_config

    cfg = build_config(run_dir / "config.yaml")
    teacher = build_teacher(cfg.teacher)
    side = teacher.preprocess.resolution
    stamp = path.with_suffix(".json")
    if not path.is_file() or not stamp.is_file() or json.loads(stamp.read_text()).get("fingerprint") != teacher.fingerprint:
        export_onnx(teacher, side, path)
        atomic_write_text(stamp, json.dumps({"teacher": cfg.teacher.name, "side": side, "fingerprint": teacher.fingerprint}))
    return path, side


def deployed_latency(run_dir: Path, teacher_path: Path, rounds: int = 7) -> dict:
    """The run's exported student and its teacher, both ONNX, timed side by side (milliseconds and ratios)."""
    import onnxruntime

    from ssdistill.engine.records import machine
    from ssdistill.eval.latency import Deployed, latency_ratios, measure_latency
    from ssdistill.export import export_run
    from ssdistill.recipe import build_config

    cfg = build_config(run_dir / "config.yaml")
    written = export_run(run_dir, onnx=True, overwrite=True)
    teacher, side = teacher_onnx(run_dir, teacher_path)
    measured = measure_latency(
        [Deployed("student", Path(written["onnx"]), cfg.student.resolution), Deployed("teacher", teacher, side)], BATCHES, rounds=rounds
    )
    return {
        "ratio": {batch: r["student"] for batch, r in latency_ratios(measured, "teacher").items()},
        **measured,
        "teacher_side": side,
        "onnxruntime": onnxruntime.__version__,
        "machine": machine(),
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------------------------------------------- table, plot


def records(bench: str, tier: str, results: Path = FRONTIER) -> list[dict]:
    """The bench's finished rows, in the order benchmarks/frontier.yaml lists them (rows no longer listed last)."""
    found = {json.loads(p.read_text())["frontier"]["row"]: json.loads(p.read_text()) for p in sorted((Path(results) / bench).glob(f"*-{tier}.json"))}
    order = [r.name for r in load_spec(bench, tier).rows]
    return [found[n] for n in order if n in found] + [found[n] for n in sorted(found) if n not in order]


def row_figures(record: dict) -> dict:
    """The figures of one row: k-NN (student, EMA copy, teacher), linear probe, % of teacher, cost, latency ratios."""
    from benchmarks.quality.records import metrics

    student, teacher = metrics(record, "student"), metrics(record, "teacher")
    ema = metrics(record, "student_ema") if "student_ema" in (record.get("knn") or {}) else {}
    model = ((record.get("evaluation") or {}).get("models") or {}).get("student") or (record.get("knn") or {}).get("student") or {}
    latency = record.get("latency") or {}
    k20 = student["k20"]
    return {
        "row": record["frontier"]["row"],
        "arch": record["frontier"]["arch"],
        "side": record["frontier"]["side"],
        "k20": k20,
        "ema_k20": ema.get("k20"),
        "linear": student["linear"],
        "teacher_k20": teacher["k20"],
        "pct": 100 * k20 / teacher["k20"] if k20 is not None and teacher["k20"] else None,
        "params_m": model.get("params_m"),
        "gflops": model.get("gflops"),
        "train_seconds": (record.get("timing") or {}).get("train_seconds"),
        "ratio_1": (latency.get("ratio") or {}).get("1"),
        "ratio_32": (latency.get("ratio") or {}).get("32"),
        "teacher_ms_1": ((latency.get("ms") or {}).get("1") or {}).get("teacher"),
        "teacher_ms_32": ((latency.get("ms") or {}).get("32") or {}).get("teacher"),
    }


def front_rows(figures: list[dict], batch: str = "1") -> list[int]:
    from ssdistill.eval.latency import pareto_front

    usable = [i for i, f in enumerate(figures) if f[f"ratio_{batch}"] and f["k20"] is not None]
    front = pareto_front([(figures[i][f"ratio_{batch}"], figures[i]["k20"]) for i in usable])
    return [usable[j] for j in front]


def table(bench: str, tier: str, results: Path = FRONTIER) -> str | None:
    """The frontier's markdown table (None when no row is on record)."""
    from benchmarks.quality.records import duration
    from ssdistill.eval.tables import cell

    found = records(bench, tier, results)
    if not found:
        return None
    figures = [row_figures(r) for r in found]
    front = set(front_rows(figures))
    spec = load_spec(bench, tier)
    teacher = found[0]["teacher"]["name"] if found[0].get("teacher") else "teacher"
    lines = [
        "| student | side | k-NN k20 | EMA k20 | linear | % of teacher | params M | GFLOPs | training | latency ratio, batch 1 | batch 32 | front |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, f in enumerate(figures):
        lines.append(
            f"| {f['arch']} | {f['side']} | {cell(f['k20'])} | {cell(f['ema_k20'])} | {cell(f['linear'])} | {cell(f['pct'])} | "
            f"{cell(f['params_m'], 3)} | {cell(f['gflops'], 3)} | {duration(f['train_seconds'])} | {_ratio(f['ratio_1'])} | "
            f"{_ratio(f['ratio_32'])} | {'yes' if i in front else ''} |"
        )
    teacher_k20 = figures[0]["teacher_k20"]
    machine = (found[-1].get("latency") or {}).get("machine") or {}
    ms = [(f["teacher_ms_1"], f["teacher_ms_32"]) for f in figures if f["teacher_ms_1"]]
    notes = [
        f"Teacher {teacher}: k-NN k20 {cell(teacher_k20)} %. Every row: the recommended recipe ({spec.recipe.relative_to(REPO)}) "
        f"with its student and side replaced, {spec.epochs} epochs, seed 0; latency ratio = the exported ONNX student's "
        f"median time per call over the teacher's, both run by onnxruntime in one process in {found[-1].get('latency', {}).get('rounds', '?')} "
        "interleaved rounds. The front: rows no other row beats on both k-NN and latency at batch 1.",
    ]
    if ms:
        low1, high1 = min(m[0] for m in ms), max(m[0] for m in ms)
        low32, high32 = min(m[1] for m in ms), max(m[1] for m in ms)
        notes.append(
            f"The teacher's own time per call across the rows' measurements: {low1:.1f}-{high1:.1f} ms at batch 1, {low32:.0f}-{high32:.0f} ms at "
            f"batch 32, on {machine.get('cpu_model', 'this machine')} with {found[-1]['latency'].get('threads')} onnxruntime threads "
            "(milliseconds belong to that machine; the ratios are what carries over)."
        )
    calibration = _calibration(spec, figures)
    if calibration:
        notes.append(calibration)
    return "\n".join(lines) + "\n\n" + "\n\n".join(notes) + "\n"


def _ratio(value) -> str:
    return "–" if value is None else f"{value:.3f}" if value < 0.1 else f"{value:.2f}"


def _calibration(spec: Bench, figures: list[dict]) -> str | None:
    """What the frontier's shorter schedule costs: the recipe's own student at the recipe's 60 epochs against its
    frontier row."""
    from ssdistill.eval.tables import cell

    cal = spec.calibration
    if not cal:
        return None
    record = _calibration_record(spec)
    mine = next((f for f in figures if f["arch"] == cal["arch"] and f["side"] == cal["side"]), None)
    if record is None or mine is None:
        return None
    from benchmarks.quality.records import metrics

    long = metrics(record, "student")["k20"]
    return (
        f"Schedule: the frontier trains every row {spec.epochs} epochs; the recipe's own student ({cal['arch']} at {cal['side']} px) reaches "
        f"{cell(long)} % k-NN at the recipe's {record['epochs']} epochs (benchmarks/results/{spec.name}/{cal['row']}-cpu.json) against "
        f"{cell(mine['k20'])} % here: {cell(long - mine['k20'])} points, for this student; larger students may lose more on a "
        "shorter schedule, so the other rows' offsets are not known."
    )


def chart(bench: str, tier: str, results: Path = FRONTIER, batch: str = "1") -> str:
    from ssdistill.report.frontier import frontier_chart

    figures = [row_figures(r) for r in records(bench, tier, results)]
    usable = [f for f in figures if f[f"ratio_{batch}"] and f["k20"] is not None]
    front = front_rows(usable, batch)
    points = [(f"{f['arch']} {f['side']} px", f[f"ratio_{batch}"], f["k20"]) for f in usable]
    return frontier_chart(
        points,
        front,
        f"{bench.upper()}: k-NN against deployed latency (batch {batch})",
        "latency / teacher's (ONNX, log scale)",
        "student k-NN k20 (%)",
        f"frontier-{bench}",
    )


def docs_block(bench: str, results: Path = FRONTIER) -> str:
    """The ``frontier-<bench>`` block of docs/benchmarks.md: the plot, the table and the command (or what to run when
    no row is on record)."""
    command = f"{COMMAND} --tier cpu --bench {bench}"
    markdown = table(bench, "cpu", results)
    if markdown is None:
        return f"No {bench.upper()} frontier row is on record yet: `{command}` measures them (`--plan` first prints their cost).\n"
    svg = chart(bench, "cpu", results)
    return f"<div class='frontier-chart'>\n{svg}\n</div>\n\n{markdown}\n`{command}` (`--table-only --docs` rebuilds this from the records).\n"


def write_outputs(bench: str, tier: str, results: Path = FRONTIER, docs: Path | None = None) -> str | None:
    """The table (returned), the self-contained page beside the records and, with ``docs`` (docs/benchmarks.md) on the
    cpu tier, the page's ``frontier-<bench>`` block (the plot inline, then the table)."""
    from ssdistill.files import atomic_write_text
    from ssdistill.report.frontier import frontier_page

    markdown = table(bench, tier, results)
    if markdown is None:
        return None
    svg = chart(bench, tier, results)
    atomic_write_text(Path(results) / f"{bench}-{tier}.html", frontier_page(f"ssdistill frontier: {bench} ({tier} tier)", [svg], markdown))
    if docs is not None and tier == "cpu":
        from benchmarks.quality.docs import replace_block

        replace_block(Path(docs), f"rows:frontier-{bench}", docs_block(bench, results))
    return markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tier", default="cpu", choices=("smoke", "cpu", "gpu"), help="gpu: Q1 at 224 px, 100 epochs, bf16 (scripts/gpu_frontier.sh)"
    )
    parser.add_argument("--bench", required=True, help="q1 or q2 (benchmarks/frontier.yaml)")
    parser.add_argument("--only", nargs="*", help="rows by name (ARCH-SIDE)")
    parser.add_argument("--plan", action="store_true", help="print the rows and the estimate of their cost, and stop")
    parser.add_argument("--table-only", action="store_true", help="rebuild the table, plot and page from the records")
    parser.add_argument("--docs", action="store_true", help="also write the table into docs/benchmarks.md and the plot into docs/")
    parser.add_argument("--results", type=Path, default=FRONTIER, help="folder of the row records")
    parser.add_argument("--runs", type=Path, default=None, help="folder of the rows' runs (default: runs/)")
    parser.add_argument("--force", action="store_true", help="measure rows again from the start")
    args = parser.parse_args(argv)
    spec = load_spec(args.bench, args.tier)
    rows = [r for r in spec.rows if not args.only or r.name in args.only]
    if args.only and len(rows) != len(args.only):
        known = ", ".join(r.name for r in spec.rows)
        raise SystemExit(f"unknown frontier row in {' '.join(args.only)}: the {args.bench} rows are {known}")
    docs = DOCS if args.docs else None
    if not args.table_only:
        print_plan(plan(spec, args.tier))
        if args.plan:
            return 0
        for row in rows:
            record = measure_row(spec, row, args.tier, args.results, args.runs, args.force)
            f = row_figures(record)
            print(
                f"{args.bench} {row.name}: k-NN {f['k20']:.1f} % ({f['pct']:.0f} % of the teacher), latency ratio {_ratio(f['ratio_1'])} at batch 1"
            )
            write_outputs(args.bench, args.tier, args.results, docs)
    markdown = write_outputs(args.bench, args.tier, args.results, docs)
    if markdown is None:
        print(f"no frontier row on record: run {COMMAND} --tier {args.tier} --bench {args.bench}")
        return 1
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
