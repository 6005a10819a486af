"""What RoB's targets look like: the teacher's scores over the same K k-means columns turned into DINO and MSN targets.

RoB-MSN and RoB-DINO over the same columns (configs/q2/rob_msn.yaml, rob_dino_kmeans.yaml) share the teacher, the
columns, the crops and the student temperature; they differ in how the teacher's scores s = n(z) · columns become
targets: DINO softmax((s − c) / τ_t) with a constant centre c, MSN sharpen(softmax(s / τ), T) then Sinkhorn over each
batch. This diagnostic measures, on the teacher's features of the training images (the original view, read from the
teacher cache; the runs use augmented global crops), for each recipe and for each of its parts:

* per-image perplexity exp(H(q_i)), averaged: how many columns one image's target spreads over;
* the mean top probability;
* the perplexity of the mean target over all images: how many columns the targets use in all (K when evenly);
* how many columns are some image's top column.

    python -m benchmarks.rob_targets                       # Q2 (cifar_resnet56, 512 columns, a pass of the teacher)
    python -m benchmarks.rob_targets --table-only --docs # re-render the table (and its block in docs/benchmarks.md)

The record is benchmarks/results/<bench>/rob_targets-cpu.json. It describes the targets, not training: which target
difference moves the students is measured by ablation rows (for example ``method.memax_weight=0``).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def target_statistics(targets: torch.Tensor) -> dict[str, float]:
    """Statistics of targets [N, K] (rows are probability distributions)."""
    q = targets.double()
    entropy = -(q * torch.log(q.clamp_min(1e-30))).sum(1)
    mean = q.mean(0)
    usage = -(mean * torch.log(mean.clamp_min(1e-30))).sum()
    return {
        "image_perplexity": float(torch.exp(entropy).mean()),
        "top_probability": float(q.max(1).values.mean()),
        "usage_perplexity": float(torch.exp(usage)),
        "top_columns": int(q.argmax(1).unique().numel()),
        "columns": int(q.shape[1]),
    }


def recipes(scores: torch.Tensor, center: torch.Tensor, dino: dict, msn: dict, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
    """Each target recipe, and its parts, of scores [N, K]; Sinkhorn runs over batches of ``batch_size`` images in a
    seeded random order, as in training."""
    from ssdistill.losses.selfsup import dino_targets, sharpen, sinkhorn

    sharpened = sharpen(torch.softmax(scores / msn["temperature"], dim=1), msn["sharpen"])
    order = torch.randperm(len(scores), generator=torch.Generator().manual_seed(seed))
    full = order[: len(order) // batch_size * batch_size]  # the training loader drops a last short batch
    balanced = torch.cat([sinkhorn(sharpened[batch]) for batch in full.split(batch_size)])
    return {
        f"DINO as trained: softmax((s − c) / {dino['temperature']}), constant centre": dino_targets(scores, center, dino["temperature"]),
        f"DINO without its centre: softmax(s / {dino['temperature']})": dino_targets(scores, None, dino["temperature"]),
        f"MSN before Sinkhorn: softmax(s / {msn['temperature']}) sharpened with T = {msn['sharpen']}": sharpened,
        f"MSN as trained: then Sinkhorn over each batch of {batch_size}": balanced,
    }


def path(bench: str, results_dir: Path = RESULTS) -> Path:
    return Path(results_dir) / bench / "rob_targets-cpu.json"


def measure(bench: str, results_dir: Path = RESULTS) -> dict:
    from torch.nn import functional as F

    from ssdistill.engine.datasets import build_dataset
    from ssdistill.engine.provider import TeacherProvider
    from ssdistill.engine.records import versions
    from ssdistill.files import atomic_write_text
    from ssdistill.methods.rob.dino import dino_temperatures
    from ssdistill.methods.rob.method import RoB
    from ssdistill.recipe import build_config
    from ssdistill.runs.assemble import train_source

    dino_cfg = build_config(REPO / "configs" / bench / "rob_dino_kmeans.yaml")
    msn_cfg = build_config(REPO / "configs" / bench / "rob_msn.yaml")
    if dino_cfg.method.projection_dim != msn_cfg.method.projection_dim or dino_cfg.teacher != msn_cfg.teacher:
        raise SystemExit(f"{bench}: rob_dino_kmeans and rob_msn must share the teacher and the columns for this comparison")
    if dino_cfg.method.teacher_crops != "online":
        raise SystemExit(f"{bench}: this diagnostic needs the online-teacher recipes (Q2); {bench}'s read a bank")
    ctx = TeacherProvider(dino_cfg, train_source(dino_cfg))
    prepared = build_dataset(
        RoB, dino_cfg, ctx, ctx.fulfil(RoB.teacher_needs(dino_cfg))
    ).tensors  # the k-means columns and the constant centre, as the run makes them
    scores = F.normalize(ctx.features(tap="pooled").float(), dim=1) @ prepared["columns"]
    m, (_, t_temp) = msn_cfg.method, dino_temperatures(dino_cfg.method)
    rows = recipes(
        scores,
        prepared["center"],
        {"temperature": t_temp},
        {"temperature": m.msn_temperature, "sharpen": m.sharpen_temperature},
        dino_cfg.data.batch_size,
        dino_cfg.trainer.seed,
    )
    record = {
        "bench": bench,
        "teacher": dino_cfg.teacher.name,
        "images": len(scores),
        "columns": int(prepared["columns"].shape[1]),
        "view": "the original view, read from the teacher cache",
        "rows": {name: target_statistics(q) for name, q in rows.items()},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
    }
    out = path(bench, results_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(record, indent=2))
    return record


def table(bench: str, results_dir: Path = RESULTS) -> str | None:
    out = path(bench, results_dir)
    if not out.is_file():
        return None
    record = json.loads(out.read_text())
    lines = [
        f"{bench.upper()}: RoB's targets over the same {record['columns']} k-means columns of {record['teacher']}'s embedding, on its features of the "
        f"{record['images']:,} training images ({record['view']}); `python -m benchmarks.rob_targets --bench {bench}`",
        "",
        "| target | columns per image (perplexity) | top probability | columns in use (perplexity of the mean) | columns that are some image's top |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, row in record["rows"].items():
        lines.append(
            f"| {name} | {row['image_perplexity']:.1f} | {row['top_probability']:.2f} | {row['usage_perplexity']:.0f} | {row['top_columns']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", default="q2", help="benchmark whose rob_dino_kmeans and rob_msn recipes give teacher, data and columns")
    parser.add_argument("--table-only", action="store_true", help="render the table from the record, measure nothing")
    parser.add_argument(
        "--docs", "--readme", dest="docs", action="store_true", help="also fill the docs/benchmarks.md block bench:<bench>-cpu-rob-targets"
    )
    args = parser.parse_args(argv)
    if not args.table_only:
        measure(args.bench)
    from benchmarks.quality import show_table

    marker = f"bench:{args.bench}-cpu-rob-targets" if args.docs else None
    return show_table(table(args.bench), f"python -m benchmarks.rob_targets --bench {args.bench}", marker)


if __name__ == "__main__":
    sys.exit(main())
