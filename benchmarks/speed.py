"""Speed benchmarks (docs/benchmarks.md#speed): each figure a ratio of two timings taken side by side.

    python -m benchmarks.speed --tier cpu              # P1-P5 on this machine (P5: peak memory of Q1 runs)
    python -m benchmarks.speed --tier smoke --only P4  # seconds, for CI
    python -m benchmarks.speed --tier cpu --only P7    # the cost of L-MCL's meta step

Writes benchmarks/results/speed-<tier>.json (every timing, the machine, versions) and speed-<tier>.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from ssdistill.files import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
IMAGENETTE = REPO / ".data" / "imagenette2_224"
DEMO = REPO / "data" / "imagenette_mini"
Q1_TRAIN_IMAGES = 9469

TIERS = {
    # images for P1 (cache fill), images per epoch for P3, (train, query) feature counts for P4
    "smoke": {
        "p1_images": 64,
        "p3_images": 128,
        "p4_sizes": [(2_000, 500)],
        "p5_methods": ["feature"],
        "p5_steps": 2,
        "p6_demo": False,
        "p7_batch": 16,
    },
    "cpu": {
        "p1_images": 1024,
        "p3_images": 1024,
        "p4_sizes": [(10_000, 5_000), (50_000, 5_000)],
        "p5_methods": ["feature", "mvmr_kd", "moco"],
        "p5_steps": 30,
        "p6_demo": True,
        "p7_batch": 128,
    },
    "gpu": {
        "p1_images": 9469,
        "p3_images": 9469,
        "p4_sizes": [(10_000, 10_000), (50_000, 10_000), (1_000_000, 10_000)],
        "p5_methods": ["feature", "mvmr_kd", "moco"],
        "p5_steps": 74,
        "p6_demo": True,
        "p7_batch": 128,
    },
}
FIGURES = ("P1", "P2", "P3", "P4", "P5", "P6", "P7")


def _train_folder() -> Path:
    """Q1 data (Imagenette 224 px, `make data`) when unpacked, else the small set shipped in data/."""
    return IMAGENETTE / "train" if (IMAGENETTE / "train").is_dir() else DEMO / "train"


def p1_cache_fill(images: int, batch_size: int = 64, num_workers: int = 2) -> dict:
    """Images/s of a cache fill over real JPEGs / images/s of the bare teacher forward on an in-memory batch."""
    from ssdistill.cache.fill import cached_teacher_features
    from ssdistill.config import TeacherConfig
    from ssdistill.data.datasets import open_images, seeded_subset
    from ssdistill.eval.features import model_throughput
    from ssdistill.models.teachers import build_teacher

    teacher = build_teacher(TeacherConfig(name="efficientnet_lite0"))
    source = seeded_subset(open_images(str(_train_folder())), images, seed=0)
    bare = model_throughput(teacher, teacher.preprocess.resolution, batch_size=batch_size, repeats=max(2, images // batch_size // 4))
    with tempfile.TemporaryDirectory() as cache_dir:
        start = time.perf_counter()
        cached_teacher_features(teacher, source, "p1", batch_size, num_workers, "cpu", cache_dir)
        fill = len(source) / (time.perf_counter() - start)
        start = time.perf_counter()
        cached_teacher_features(teacher, source, "p1", batch_size, num_workers, "cpu", cache_dir)
        reread_seconds = time.perf_counter() - start
    return {
        "figure": "P1 cache fill / bare teacher forward",
        "ratio": fill / bare,
        "goal": ">= 0.9",
        "fill_images_per_s": fill,
        "bare_forward_images_per_s": bare,
        "second_open_seconds": reread_seconds,
        "images": len(source),
        "batch_size": batch_size,
        "num_workers": num_workers,
        "data": str(_train_folder().relative_to(REPO)),
    }


def p3_cache_speedup(images: int) -> dict:
    """Epoch time with the teacher online / epoch time reading the (warm) cache, Q1 recipe, one epoch."""
    from ssdistill import distill

    with tempfile.TemporaryDirectory() as scratch:
        common = {
            "data": {"train": str(_train_folder()), "val": None, "train_subset": images},
            "trainer": {"epochs": 1, "progress_bar": False},
            "cache": {"dir": str(Path(scratch) / "cache")},
        }
        recipe = REPO / "configs" / "q1" / "feature.yaml"
        distill(recipe, run={"dir": scratch, "name": "fill"}, **common, quiet=True)
        cached = distill(recipe, run={"dir": scratch, "name": "cached"}, **common, quiet=True)
        online = distill(
            recipe,
            run={"dir": scratch, "name": "online"},
            teacher={"precompute": False},
            **common,
            quiet=True,
        )
    return {
        "figure": "P3 epoch with the teacher online / epoch with the cache",
        "ratio": online["timing"]["train_seconds"] / cached["timing"]["train_seconds"],
        "goal": "large (report)",
        "online_epoch_seconds": online["timing"]["train_seconds"],
        "cached_epoch_seconds": cached["timing"]["train_seconds"],
        "images": images,
        "recipe": "configs/q1/feature.yaml (EfficientNet-Lite0 224 -> mobilenetv3_small_100 96)",
        "data": str(_train_folder().relative_to(REPO)),
    }


def _step_fixture(method: str, batch_size: int, overrides: dict | None = None):
    """(recipe, student, module, batch) of one training step of ``method``'s recipe with random cached teacher signals."""
    from ssdistill.cache.signals import TableSignal
    from ssdistill.engine.contract import Fulfilment
    from ssdistill.engine.datasets import layout
    from ssdistill.engine.provider import TeacherProvider
    from ssdistill.methods.registry import METHODS
    from ssdistill.models.students import Student
    from ssdistill.recipe import build_config

    recipe = {"feature": "configs/demo/feature.yaml", "mvmr": "configs/demo/mvmr_kd.yaml", "seed": "configs/q1/seed.yaml"}[method]
    # SEED reads its teacher embeddings from a table (bank or original view: the same step) and keeps a queue as
    # large as Q1's training split
    cfg = build_config(REPO / recipe, {"method": {"teacher_view": "original"}, "data": {"batch_size": batch_size}} if method == "seed" else overrides)
    torch.manual_seed(0)
    student = Student(cfg.student.arch)
    method_class = METHODS[method]
    signals = {name: TableSignal(torch.randn(Q1_TRAIN_IMAGES, 1280).half(), "random") for name in method_class.teacher_needs(cfg)}
    module = method_class(cfg, student, signals, dataset_size=Q1_TRAIN_IMAGES)  # a queue is full from the start (random unit keys)
    module.log_loss = lambda loss, **terms: loss  # no Lightning trainer here: skip logging
    # the batch the method's dataset yields with its signals read from tables (its own declared layout)
    batch = layout(method_class, cfg, TeacherProvider(cfg, None), Fulfilment(signals)).example(batch_size, Q1_TRAIN_IMAGES)
    return recipe, student, module, batch


def p2_step_overhead(method: str, batch_size: int = 64, repeats: int = 10) -> dict:
    """One training step with cached teacher signals (forward, loss, backward) / the bare student forward+backward
    on the same views, both measured here on the same batch (docs/benchmarks.md P2; goal <= 1.15)."""
    recipe, student, module, batch = _step_fixture(method, batch_size)
    queue = getattr(module, "queue", None)
    passes = list(batch["views"].values())

    def bare() -> None:
        sum(student(x).float().mean() for x in passes).backward()

    def full() -> None:
        module.training_step(batch, 0).backward()

    steps = [("bare", bare), ("full", full)]
    head = next((getattr(module, name) for name in ("projector", "head") if hasattr(module, name)), None)
    if head is not None:  # the method's own trainable head, to say how much of the overhead it is

        def bare_with_head() -> None:
            sum(head(student(x)).float().mean() for x in passes).backward()

        steps.append(("bare_with_head", bare_with_head))
    timings = {}
    for name, step in steps * 5:  # interleaved rounds, minimum taken: robust to CPU noise
        module.zero_grad(set_to_none=True)
        step()
        start = time.perf_counter()
        for _ in range(repeats):
            module.zero_grad(set_to_none=True)
            step()
        timings.setdefault(name, []).append((time.perf_counter() - start) / repeats)
    bare_s, full_s = min(timings["bare"]), min(timings["full"])
    return {
        "figure": f"P2 step overhead, {method}",
        "ratio": full_s / bare_s,
        "goal": "<= 1.15",
        "step_seconds": full_s,
        "bare_seconds": bare_s,
        "bare_with_head_seconds": min(timings["bare_with_head"]) if head is not None else None,
        "batch_size": batch_size,
        "views": len(passes),
        "recipe": recipe,
        "queue": None if queue is None else len(queue.keys),
    }


def p7_meta_step(cohort: list[str], batch_size: int, rounds: int = 3) -> dict:
    """L-MCL's meta step (2 virtual steps, 1 on the cross-entropy, the hypergradient) against one real L-MCL step and
    one supervised MCL step of the same cohort, on one batch of 32 px images (two per class, 10 classes), interleaved
    rounds, minimum taken. The amortised overhead is the meta step over ``meta_every`` (50) real steps."""
    from ssdistill.methods.registry import METHODS
    from ssdistill.recipe import build_config
    from ssdistill.runs.load import build_students

    def module(name: str):
        cfg = build_config({"method": {"name": name, "mode": "supervised", "cohort": cohort}, "student": {"arch": cohort[0], "resolution": 32}})
        torch.manual_seed(0)
        built = METHODS[name](cfg, build_students(METHODS[name], cfg), {}, dataset_size=10_000, prepared={"classes": torch.tensor(10)})
        built.log_loss = lambda loss, **terms: loss
        return built

    mcl, lmcl = module("mcl"), module("lmcl")
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(batch_size // 2).repeat_interleave(2) % 10
    batch = {"views": {"student": torch.rand(batch_size, 3, 32, 32, generator=generator)}, "label": labels, "index": torch.arange(batch_size)}

    def step(m) -> None:
        m.zero_grad(set_to_none=True)
        m.training_step(batch, 0).backward()

    timings: dict[str, list[float]] = {}
    for name, run in [("mcl_step", lambda: step(mcl)), ("lmcl_step", lambda: step(lmcl)), ("meta_step", lambda: lmcl.meta_update(batch))] * (
        rounds + 1
    ):
        start = time.perf_counter()
        run()
        timings.setdefault(name, []).append(time.perf_counter() - start)
    best = {name: min(values[1:]) for name, values in timings.items()}  # the first round warms up
    every = lmcl.cfg.method.meta_every
    return {
        "figure": f"P7 L-MCL meta step, {' + '.join(cohort)}",
        "ratio": best["meta_step"] / best["lmcl_step"],
        "goal": "measured (official: amortised over 50 steps)",
        "meta_seconds": best["meta_step"],
        "lmcl_step_seconds": best["lmcl_step"],
        "mcl_step_seconds": best["mcl_step"],
        "lmcl_over_mcl": best["lmcl_step"] / best["mcl_step"],
        "amortised_overhead": best["meta_step"] / (every * best["lmcl_step"]),
        "meta_every": every,
        "batch_size": batch_size,
    }


def p6_bf16(demo_runs: bool, repeats: int = 5) -> dict:
    """bf16-mixed against fp32 on this machine. Step time: one training step of the demo recipe (forward, loss,
    backward) under CPU/GPU autocast in bfloat16 and in float32, interleaved rounds, minimum taken. With ``demo_runs``
    the demo schedule also runs end to end once per precision, each in a fresh process: peak memory, training time and
    the student's k-NN (the figure asks that bf16 stays within 1 point)."""
    recipe, _, module, batch = _step_fixture("feature", 64, {"data": {"batch_size": 64}})
    device = "cuda" if torch.cuda.is_available() else "cpu"
    module.to(device)
    batch = {
        k: ({n: v.to(device) for n, v in x.items()} if isinstance(x, dict) else x.to(device) if torch.is_tensor(x) else x) for k, x in batch.items()
    }

    def step(bf16: bool) -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = module.training_step(batch, 0)
        loss.backward()

    timings: dict[bool, list[float]] = {}
    for bf16 in (False, True) * 5:
        module.zero_grad(set_to_none=True)
        step(bf16)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            module.zero_grad(set_to_none=True)
            step(bf16)
        if device == "cuda":
            torch.cuda.synchronize()
        timings.setdefault(bf16, []).append((time.perf_counter() - start) / repeats)
    row = {
        "figure": "P6 bf16-mixed step time (share of fp32)",
        "ratio": min(timings[True]) / min(timings[False]),
        "goal": "report",
        "bf16_step_seconds": min(timings[True]),
        "fp32_step_seconds": min(timings[False]),
        "device": device,
        "recipe": recipe,
        "demo": None,
    }
    if demo_runs:
        demo = {}
        with tempfile.TemporaryDirectory() as scratch:
            for precision in ("32", "bf16-mixed"):
                name = f"p6-{precision}"
                command = [
                    sys.executable,
                    "-m",
                    "ssdistill",
                    "distill",
                    "--config",
                    str(REPO / recipe),
                    f"run.dir={scratch}",
                    f"run.name={name}",
                    f"trainer.precision={precision}",
                    "trainer.progress_bar=false",
                ]
                subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
                results = json.loads((Path(scratch) / name / "results.json").read_text())
                demo[precision] = {
                    "knn_top1": results["knn"]["student"]["top1"],
                    "train_seconds": results["timing"]["train_seconds"],
                    "peak_rss_mib": results["timing"]["peak_rss_mb"],
                }
        demo["knn_difference"] = demo["bf16-mixed"]["knn_top1"] - demo["32"]["knn_top1"]
        demo["within_1_point"] = abs(demo["knn_difference"]) <= 1.0
        demo["train_time_ratio"] = demo["bf16-mixed"]["train_seconds"] / demo["32"]["train_seconds"]
        demo["peak_memory_ratio"] = demo["bf16-mixed"]["peak_rss_mib"] / demo["32"]["peak_rss_mib"]
        row["demo"] = demo
    return row


def p5_peak_memory(method: str, steps: int) -> dict:
    """Peak resident memory of a Q1 cpu-tier run (``configs/q1/<method>.yaml``: one epoch capped at ``steps`` steps,
    then the k-NN evaluation of teacher, random init and student), run in a fresh process."""
    recipe = REPO / "configs" / "q1" / f"{method}.yaml"
    total_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    with tempfile.TemporaryDirectory() as scratch:
        command = [
            sys.executable,
            "-m",
            "ssdistill",
            "distill",
            "--config",
            str(recipe),
            f"run.dir={scratch}",
            "run.name=p5",
            "trainer.epochs=1",
            f"trainer.limit_train_batches={steps}",
            "trainer.progress_bar=false",
        ]
        if not (IMAGENETTE / "train").is_dir():
            command += [f"data.train={DEMO / 'train'}", f"data.val={DEMO / 'val'}"]
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        results = json.loads((Path(scratch) / "p5" / "results.json").read_text())
    peak = results["timing"]["peak_rss_mb"]
    return {
        "figure": f"P5 peak memory of a Q1 run, {method} (share of the machine's RAM)",
        "ratio": peak / total_mib,
        "goal": "report",
        "peak_rss_mib": peak,
        "machine_ram_mib": total_mib,
        "steps": steps,
        "batch_size": results["config"]["data"]["batch_size"],
        "num_workers": results["config"]["data"]["num_workers"],
        "seconds": seconds,
        "recipe": str(recipe.relative_to(REPO)),
    }


def _clustered_features(n: int, dim: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    labels = rng.integers(0, classes, n)
    return (centres[labels] + 2.0 * rng.normal(size=(n, dim))).astype(np.float32), labels


def p4_knn(train: int, query: int, dim: int = 512, classes: int = 10, k: int = 20, temperature: float = 0.07) -> dict:
    """ssdistill's weighted k-NN / scikit-learn's brute-force cosine k-NN with the same weighting, same features."""
    from sklearn.neighbors import KNeighborsClassifier

    from ssdistill.eval.knn import knn_scores

    bank, bank_labels = _clustered_features(train, dim, classes, 0)
    queries, _ = _clustered_features(query, dim, classes, 1)
    start = time.perf_counter()
    ours = knn_scores(torch.from_numpy(bank), torch.from_numpy(bank_labels), torch.from_numpy(queries), classes, k, temperature).argmax(1).numpy()
    ours_seconds = time.perf_counter() - start
    sklearn = KNeighborsClassifier(n_neighbors=k, algorithm="brute", metric="cosine", weights=lambda d: np.exp((1.0 - d) / temperature), n_jobs=-1)
    start = time.perf_counter()
    theirs = sklearn.fit(bank, bank_labels).predict(queries)
    sklearn_seconds = time.perf_counter() - start
    return {
        "figure": f"P4 k-NN time, ssdistill / scikit-learn, N={train}",
        "ratio": ours_seconds / sklearn_seconds,
        "goal": "< 1 (report)",
        "ssdistill_seconds": ours_seconds,
        "sklearn_seconds": sklearn_seconds,
        "prediction_agreement": float((ours == theirs).mean()),
        "train": train,
        "query": query,
        "dim": dim,
        "k": k,
        "temperature": temperature,
    }


def _machine() -> dict:
    import lightning
    import timm

    from ssdistill.engine.records import machine

    return {
        **machine(),  # CPU count, model, vector extensions, torch's CPU capability, GPU
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "lightning": lightning.__version__,
    }


def _markdown(record: dict) -> str:
    lines = [
        f"Speed, tier `{record['tier']}`, {record['date']}, {record['machine']['cpus']} CPU cores, "
        f"GPU: {record['machine']['gpu'] or 'none'}, torch {record['machine']['torch']}; `{record['command']}`",
        "",
        "| figure | ratio | goal | measured |",
        "| --- | ---: | --- | --- |",
    ]
    for row in record["rows"]:
        if row["figure"].startswith("P2"):
            detail = f"{row['step_seconds'] * 1000:.0f} ms vs bare student {row['bare_seconds'] * 1000:.0f} ms ({row['views']} view(s) of {row['batch_size']}, `{row['recipe']}`)"
            if row.get("bare_with_head_seconds"):
                detail += f"; student + the method's trainable head alone {row['bare_with_head_seconds'] * 1000:.0f} ms"
        elif row["figure"].startswith("P7"):
            detail = (
                f"meta step {row['meta_seconds']:.2f} s vs one L-MCL step {row['lmcl_step_seconds']:.2f} s (batch {row['batch_size']}, 32 px): "
                f"+{100 * row['amortised_overhead']:.0f} % over {row['meta_every']} steps; an L-MCL step is x{row['lmcl_over_mcl']:.2f} a supervised MCL step"
            )
        elif row["figure"].startswith("P1"):
            detail = f"fill {row['fill_images_per_s']:.1f} img/s vs bare forward {row['bare_forward_images_per_s']:.1f} img/s ({row['images']} images); second open {row['second_open_seconds']:.2f} s"
        elif row["figure"].startswith("P5"):
            detail = f"{row['peak_rss_mib'] / 1024:.2f} GiB of {row['machine_ram_mib'] / 1024:.0f} GiB (largest process; batch {row['batch_size']}, {row['num_workers']} data workers, {row['steps']} steps then k-NN evaluation, `{row['recipe']}`)"
        elif row["figure"].startswith("P3"):
            detail = f"online {row['online_epoch_seconds']:.1f} s vs cached {row['cached_epoch_seconds']:.1f} s per epoch of {row['images']} images"
        elif row["figure"].startswith("P6"):
            detail = f"{row['bf16_step_seconds'] * 1000:.0f} ms vs fp32 {row['fp32_step_seconds'] * 1000:.0f} ms per step of `{row['recipe']}` on {row['device']}"
            demo = row.get("demo")
            if demo:
                detail += (
                    f"; demo schedule end to end: training time x{demo['train_time_ratio']:.2f}, peak memory x{demo['peak_memory_ratio']:.2f}, "
                    f"student k-NN {demo['bf16-mixed']['knn_top1']:.1f} % vs {demo['32']['knn_top1']:.1f} % "
                    f"({'within' if demo['within_1_point'] else 'NOT within'} 1 point)"
                )
        else:
            detail = f"{row['ssdistill_seconds']:.2f} s vs {row['sklearn_seconds']:.2f} s, {row['query']} queries x {row['dim']}-d, predictions agree {100 * row['prediction_agreement']:.2f} %"
        lines.append(f"| {row['figure']} | {row['ratio']:.2f} | {row['goal']} | {detail} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="ssdistill speed benchmarks (ratios measured side by side).")
    parser.add_argument("--tier", choices=sorted(TIERS), default="cpu")
    parser.add_argument("--only", nargs="*", choices=FIGURES, default=list(FIGURES))
    parser.add_argument(
        "--docs",
        "--readme",
        dest="docs",
        action="store_true",
        help="also replace the docs/benchmarks.md block between <!-- bench:speed-<tier> --> markers",
    )
    parser.add_argument("--table-only", action="store_true", help="only regenerate the markdown from the JSON file")
    args = parser.parse_args()
    if args.table_only:
        _write_table(args.tier, json.loads((RESULTS / f"speed-{args.tier}.json").read_text()), args.docs)
        return
    tier = TIERS[args.tier]
    rows = []
    if "P1" in args.only:
        rows.append(p1_cache_fill(tier["p1_images"]))
        print(rows[-1])
    if "P2" in args.only:
        for method in ("feature", "mvmr", "seed"):
            rows.append(p2_step_overhead(method))
            print(rows[-1])
    if "P3" in args.only:
        rows.append(p3_cache_speedup(tier["p3_images"]))
        print(rows[-1])
    if "P4" in args.only:
        for train, query in tier["p4_sizes"]:
            rows.append(p4_knn(train, query))
            print(rows[-1])
    if "P5" in args.only:
        for method in tier["p5_methods"]:
            rows.append(p5_peak_memory(method, tier["p5_steps"]))
            print(rows[-1])
    if "P6" in args.only:
        rows.append(p6_bf16(tier["p6_demo"]))
        print(rows[-1])
    if "P7" in args.only:
        for cohort in (["cifar_resnet20", "cifar_resnet20"], ["cifar_resnet20", "mobilenetv3_small_100"]):
            rows.append(p7_meta_step(cohort, tier["p7_batch"]))
            print(rows[-1])
    record = {
        "tier": args.tier,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "command": f"python -m benchmarks.speed --tier {args.tier}" + (f" --only {' '.join(args.only)}" if args.only != list(FIGURES) else ""),
        "machine": _machine(),
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"speed-{args.tier}.json"
    if path.is_file():  # keep the rows this run did not measure (e.g. with --only); each row keeps its own date
        measured = {row["figure"] for row in rows}
        kept = [row for row in json.loads(path.read_text())["rows"] if row["figure"] not in measured]
        record["rows"] = sorted(kept + rows, key=lambda row: row["figure"])
        record["command"] = f"python -m benchmarks.speed --tier {args.tier}"
    for row in rows:
        row["date"] = record["date"]
    atomic_write_text(path, json.dumps(record, indent=2))
    _write_table(args.tier, record, args.docs)


def _write_table(tier: str, record: dict, readme: bool) -> None:
    from benchmarks.quality import DOCS, replace_block

    markdown = _markdown(record)
    atomic_write_text(RESULTS / f"speed-{tier}.md", markdown)
    if readme:
        replace_block(DOCS, f"bench:speed-{tier}", markdown)
    print(markdown)


if __name__ == "__main__":
    main()
