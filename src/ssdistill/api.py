"""Python API: ``distill`` (train + evaluate a student) and ``evaluate`` (k-NN of a run or a teacher).

    import ssdistill
    results = ssdistill.distill("configs/demo/feature.yaml", trainer={"epochs": 5})
"""

from __future__ import annotations

import copy
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from torch.utils.data import DataLoader

from ssdistill.cache.bank import BankViews, cached_teacher_bank
from ssdistill.cache.fill import cached_teacher_features
from ssdistill.cache.signals import OnlineSignal, TableSignal, TeacherSignal
from ssdistill.config import DistillConfig, TeacherConfig, build_config, merge_nested, parse_overrides
from ssdistill.data.datasets import ImageSource, IndexedViews, open_images, seeded_subset
from ssdistill.data.views import original_view
from ssdistill.engine import metrics_csv
from ssdistill.engine.rundir import RUN_DIR_ENV, atomic_write_text, existing_run_dir, new_run_dir
from ssdistill.engine.trainer import TrainingClock, build_trainer
from ssdistill.errors import ConfigError, DataError, ModelError
from ssdistill.eval.compare import Candidate, knn_side_by_side
from ssdistill.eval.monitor import KNNMonitor
from ssdistill.eval.suite import KNN_PROTOCOLS, SuiteOptions, evaluate_suite, protocol_name
from ssdistill.eval.features import extract_features
from ssdistill.methods import METHODS
from ssdistill.models.students import Student
from ssdistill.models.teachers import FrozenTeacher, build_teacher

RESULTS_VERSION = 1


def _compute_device(accelerator: str) -> torch.device:
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _open(cfg: DistillConfig, spec: str) -> ImageSource:
    data = cfg.data
    return open_images(spec, data.root, data.download, data.skip_corrupt)


def _student_view(cfg: DistillConfig):
    return original_view(cfg.student.resolution)


def _teacher_view(teacher: FrozenTeacher):
    pre = teacher.preprocess
    return original_view(pre.resolution, pre.crop_pct, pre.interpolation)


def build_student(cfg: DistillConfig) -> Student:
    torch.manual_seed(cfg.trainer.seed)
    s = cfg.student
    return Student(s.arch, s.mean, s.std, s.channels_last)


def distill(
    config: str | Path | dict | DistillConfig | None = None,
    *,
    overrides: list[str] | dict[str, Any] | None = None,
    resume: str | Path | None = None,
    callbacks: list | tuple = (),
    quiet: bool = False,
    **sections: Any,
) -> dict[str, Any]:
    """Distil a teacher into a student and evaluate it; returns the results record (also in ``results.json``).

    ``config`` is a YAML path, dict or ``DistillConfig``; ``overrides`` are ``key=value`` strings or a nested
    dict; keyword sections (``trainer={"epochs": 5}``) are merged last. ``resume=RUN_DIR`` continues a
    killed run from ``RUN_DIR/checkpoints/last.ckpt`` with its saved config (overrides still apply)."""
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    merged_overrides = merge_nested(overrides or {}, sections)
    if resume is not None:
        run_dir = existing_run_dir(resume)
        cfg = build_config(run_dir / "config.yaml", merged_overrides)
    else:
        cfg = build_config(config, merged_overrides)
        run_dir = new_run_dir(cfg.run.dir, cfg.run.name, cfg.method.name)
    if int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0"))) == 0:
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    os.environ[RUN_DIR_ENV] = str(run_dir)  # DDP worker processes re-run this script and must join this run
    try:
        return _distill(cfg, run_dir, resume is not None, callbacks, quiet)
    finally:
        if os.environ.get("LOCAL_RANK") is None:
            os.environ.pop(RUN_DIR_ENV, None)


def _distill(cfg: DistillConfig, run_dir: Path, resuming: bool, callbacks, quiet: bool) -> dict[str, Any]:
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    method_class = METHODS[cfg.method.name]
    device = _compute_device(cfg.trainer.accelerator)
    train_source = seeded_subset(_open(cfg, cfg.data.train), cfg.data.train_subset, cfg.trainer.seed)
    if len(train_source) < cfg.data.batch_size:
        raise DataError(f"{cfg.data.train} has {len(train_source)} images, fewer than data.batch_size={cfg.data.batch_size}; lower the batch size")

    timing: dict[str, float] = {}
    kind = method_class.teacher_signal(cfg)
    teacher = build_teacher(cfg.teacher) if kind != "none" else None
    student = build_student(cfg)
    initial_state = copy.deepcopy(student.state_dict())

    if kind == "table" and not cfg.teacher.precompute:
        kind = "online"
    if cfg.teachers and not (method_class.multi_teacher and kind == "table"):
        raise ConfigError(
            f"method '{cfg.method.name}' uses one teacher; remove the 'teachers' list (multi-teacher methods: "
            f"{', '.join(n for n, m in METHODS.items() if m.multi_teacher) or 'none'}; MV-MR needs mode=kd and teacher.precompute=true)"
        )
    signal: TeacherSignal | None = None
    extra_signals: list[TeacherSignal] = []
    teacher_train_features = None
    if kind == "table":
        start = time.perf_counter()
        teacher_train_features = _teacher_table(cfg, teacher, train_source, cfg.data.train, device)
        signal = TableSignal(teacher_train_features, teacher.fingerprint)
        extra_signals = [_extra_teacher_signal(cfg, extra, train_source, device) for extra in cfg.teachers]
        timing["teacher_signal_seconds"] = time.perf_counter() - start
    elif kind == "online":
        signal = OnlineSignal(teacher)
    approximations: list[str] = []  # how the teacher signal was obtained, where it only approximates the method
    dataset = None
    if kind == "bank":
        if not cfg.cache.enabled:
            raise ConfigError("method.teacher_view=bank reads the teacher cache: set cache.enabled=true")
        start = time.perf_counter()
        repeats = cfg.method.bank_repeats
        table, params = cached_teacher_bank(
            teacher, train_source, cfg.data.train, cfg.aug, repeats, cfg.trainer.seed,
            cfg.data.eval_batch_size, cfg.data.num_workers, device, cfg.cache.dir, cfg.cache.dtype,
        )
        timing["teacher_signal_seconds"] = time.perf_counter() - start
        signal = TableSignal(table, teacher.fingerprint)
        dataset = BankViews(train_source, params, repeats, cfg.student.resolution)
        approximations.append(f"teacher_bank({repeats})")
    own_dataset = method_class.train_dataset(cfg, teacher, train_source, device)
    if own_dataset is not None:
        dataset = own_dataset

    # re-seed so heads, data order and augmentations do not depend on how the teacher signal was obtained
    # (a cold cache fill draws random numbers, a warm cache does not)
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    module = method_class(cfg, student, signal, extra_signals=extra_signals, dataset_size=len(train_source))
    if dataset is None:
        dataset = IndexedViews(train_source, method_class.train_views(cfg, teacher))
    loader = DataLoader(
        dataset,
        batch_size=cfg.data.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=cfg.data.num_workers,
        persistent_workers=cfg.data.num_workers > 0,
        pin_memory=device.type == "cuda",
    )
    trainer = build_trainer(cfg, run_dir, [*callbacks, *_monitors(cfg, train_source)])
    last = run_dir / "checkpoints" / "last.ckpt"
    if resuming and not last.is_file():
        raise ConfigError(f"nothing to resume in {run_dir}: no checkpoints/last.ckpt (the run stopped before its first checkpoint)")
    previous_metrics = metrics_csv.set_aside(run_dir) if resuming and trainer.is_global_zero else None
    resumed_step = torch.load(last, map_location="cpu", weights_only=False)["global_step"] if resuming else 0
    trainer.fit(module, loader, ckpt_path=str(last) if resuming else None)
    clock = next(c for c in trainer.callbacks if isinstance(c, TrainingClock))
    this_attempt = clock.this_attempt()
    timing["train_seconds"] = clock.before + this_attempt  # every attempt of a resumed run
    timing["train_seconds_this_attempt"] = this_attempt
    if previous_metrics is not None:
        metrics_csv.merge(run_dir, previous_metrics, upto_step=resumed_step)
    steps_run = trainer.global_step - resumed_step
    timing["train_images_per_s"] = steps_run * cfg.data.batch_size * trainer.world_size / max(this_attempt, 1e-9)
    timing["peak_rss_mb"] = peak_rss_mb()
    if not trainer.is_global_zero:
        return {}

    start = time.perf_counter()
    reference = teacher if teacher is not None or not cfg.eval.teacher else build_teacher(cfg.teacher)
    knn, suite, note = _evaluate(cfg, student.cpu(), initial_state, reference, train_source, teacher_train_features, device, run_dir)
    timing["eval_seconds"] = time.perf_counter() - start
    results = _results_record(cfg, run_dir, student, reference, train_source, knn, note, timing, trainer.global_step, approximations)
    results["deviations"] = method_class.deviations(cfg)
    results["evaluation"] = suite
    results["teacher_in_training"] = teacher is not None
    atomic_write_text(run_dir / "results.json", json.dumps(results, indent=2))
    if not quiet:
        print(format_summary(results))
    return results


def _monitors(cfg: DistillConfig, train_source: ImageSource) -> list:
    """The k-NN monitoring callback when ``eval.monitor_every`` asks for it (labelled memory and val needed)."""
    if not cfg.eval.monitor_every:
        return []
    memory = _open(cfg, cfg.data.knn_train) if cfg.data.knn_train else train_source
    if not cfg.data.val or memory.labels is None:
        raise ConfigError("eval.monitor_every needs labelled data: a class-folder data.train (or data.knn_train) and data.val")
    memory = seeded_subset(memory, min(cfg.eval.monitor_images, len(memory)), cfg.trainer.seed)
    return [
        KNNMonitor(memory, _open(cfg, cfg.data.val), _student_view(cfg), cfg.eval.monitor_every, cfg.eval.knn_k, cfg.eval.knn_t,
                   cfg.data.eval_batch_size, cfg.data.num_workers)
    ]


def _extra_teacher_signal(cfg: DistillConfig, teacher_cfg: TeacherConfig, source: ImageSource, device) -> TableSignal:
    teacher = build_teacher(teacher_cfg)
    return TableSignal(_teacher_table(cfg, teacher, source, cfg.data.train, device), teacher.fingerprint)


def _teacher_table(cfg: DistillConfig, teacher: FrozenTeacher, source: ImageSource, name: str, device) -> torch.Tensor:
    """Teacher outputs of the original view for every sample: from the disk cache (filled on first use), or computed."""
    if cfg.cache.enabled:
        return cached_teacher_features(
            teacher, source, name, cfg.data.eval_batch_size, cfg.data.num_workers, device, cfg.cache.dir, cfg.cache.dtype
        )
    return extract_features(teacher, source, _teacher_view(teacher), cfg.data.eval_batch_size, cfg.data.num_workers, device, "teacher")


def _pooled_teacher(cfg: DistillConfig, teacher: FrozenTeacher | None = None) -> FrozenTeacher:
    """The teacher with its ``pooled`` output, the tap every evaluation reads (METHODS 7.1); built when not given."""
    if teacher is not None and teacher.output == "pooled":
        return teacher
    return build_teacher(cfg.teacher.model_copy(update={"output": "pooled"}))


def teacher_split_features(cfg: DistillConfig, spec: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """The teacher's pooled features [N, d] of every image of the split ``spec`` (original view), in dataset order;
    read from the teacher cache when it is on (filled on first use), else computed."""
    return _teacher_table(cfg, _pooled_teacher(cfg), _open(cfg, spec), spec, device)


def _candidates(cfg, student, initial_state, teacher, train_source, teacher_train_features, device):
    """(candidates, memory split, evaluation split) for the side-by-side evaluation, or a note saying why there is none."""
    if not cfg.data.val:
        return None, "no data.val given: set data.val to a labelled split to get k-NN numbers"
    memory = _open(cfg, cfg.data.knn_train) if cfg.data.knn_train else train_source
    if memory.labels is None:
        return None, "data.train has no class folders: set data.knn_train to a labelled split to get k-NN numbers"
    query = _open(cfg, cfg.data.val)
    if query.labels is None:
        return None, f"data.val ({cfg.data.val}) has no class folders, so k-NN cannot be scored"
    candidates = []
    if teacher is not None and cfg.eval.teacher:
        reuse = teacher_train_features if memory is train_source and teacher.output == "pooled" else None
        teacher = _pooled_teacher(cfg, teacher)
        memory_name = cfg.data.knn_train or cfg.data.train
        bank = reuse if reuse is not None else _teacher_table(cfg, teacher, memory, memory_name, device)
        queries = _teacher_table(cfg, teacher, query, cfg.data.val, device) if cfg.cache.enabled else None
        candidates.append(Candidate("teacher", teacher, _teacher_view(teacher), teacher.preprocess.resolution, bank, queries))
    if cfg.eval.random_init:
        random_student = build_student(cfg)
        random_student.load_state_dict(initial_state)
        candidates.append(Candidate("random_init", random_student, _student_view(cfg), cfg.student.resolution))
    candidates.append(Candidate("student", student, _student_view(cfg), cfg.student.resolution))
    return (candidates, memory, query), None


def _evaluate(cfg, student, initial_state, teacher, train_source, teacher_train_features, device, run_dir=None):
    """(k-NN side by side, full evaluation or None, note): the full suite when ``eval.suite`` is full."""
    found, note = _candidates(cfg, student, initial_state, teacher, train_source, teacher_train_features, device)
    if found is None:
        return None, None, note
    candidates, memory, query = found
    args = (cfg.data.eval_batch_size, cfg.data.num_workers, device)
    if cfg.eval.suite != "full":
        return knn_side_by_side(candidates, memory, query, cfg.eval.knn_k, cfg.eval.knn_t, *args), None, None
    primary = (cfg.eval.knn_k, cfg.eval.knn_t)
    options = SuiteOptions(knn=tuple(dict.fromkeys([primary, *KNN_PROTOCOLS])), seed=cfg.trainer.seed)
    feature_dir = None if run_dir is None else Path(run_dir) / "features"
    suite = evaluate_suite(candidates, memory, query, options, *args, feature_dir=feature_dir)
    # the k-NN table is the suite's primary protocol: features, FLOPs and images/s are measured once
    knn = {
        label: {**row["knn"][protocol_name(*primary)], **{k: row[k] for k in ("images_per_s", "params_m", "gflops", "teacher_alignment") if k in row}}
        for label, row in suite["models"].items()
    }
    return knn, suite, None


def peak_rss_mb() -> float | None:
    """Peak resident memory (MiB) of this process so far, or of its largest finished child (data workers) if larger.

    On Linux the process's own peak is VmHWM of its address space: ``ru_maxrss`` of a process started by exec also
    carries the peak of whatever spawned it (the kernel keeps the old address space's high-water mark), so a run
    launched from a large parent would report the parent's memory."""
    try:
        import resource
    except ImportError:  # Windows has no resource module
        return None
    own_kib = _address_space_peak_kib()
    if own_kib is None:
        own_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_kib = max(own_kib, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return peak_kib / (1024 * 1024) if platform.system() == "Darwin" else peak_kib / 1024  # bytes on macOS, KiB on Linux


def _address_space_peak_kib() -> int | None:
    """VmHWM from /proc/self/status (KiB), None where there is no such file (macOS)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "asimd", "sve", "sve2")  # also every avx512* and amx*


def machine(cpuinfo: str | None = None) -> dict[str, Any]:
    """Where a run ran: CPU count, model and vector extensions (figures move between CPUs: different kernel paths
    round differently and a training trajectory follows), the instruction set torch dispatches to, and the GPU.
    ``cpuinfo``: the text of /proc/cpuinfo (read when not given; absent outside Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():  # the first processor's entries
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    model = fields.get("model name") or fields.get("Model") or platform.processor() or platform.machine()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    vector = sorted(f for f in flags if f in VECTOR_FLAGS or f.startswith(("avx512", "amx")))
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "cpu_vector_extensions": vector,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _versions() -> dict[str, str]:
    import lightning
    import timm
    import torchvision

    from ssdistill import __version__

    return {
        "ssdistill": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
    }


def _results_record(cfg, run_dir, student, teacher, train_source, knn, note, timing, steps_run, approximations) -> dict[str, Any]:
    retained = None
    if knn and "teacher" in knn and knn["teacher"]["top1"] > 0:
        retained = 100.0 * knn["student"]["top1"] / knn["teacher"]["top1"]
    return {
        "results_version": RESULTS_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_dir": str(run_dir),
        "method": cfg.method.name,
        "seed": cfg.trainer.seed,
        "epochs": cfg.trainer.epochs,
        "steps": steps_run,
        "student": {"arch": cfg.student.arch, "resolution": cfg.student.resolution, "dim": student.dim},
        "teacher": None
        if teacher is None
        else {
            "name": teacher.name,
            "fingerprint": teacher.fingerprint,
            "output": teacher.output,
            "preprocess": teacher.preprocess.__dict__,
        },
        "extra_teachers": [{"name": t.name, "weights": t.weights, "output": t.output} for t in cfg.teachers],
        "data": {
            "train": cfg.data.train,
            "train_size": len(train_source),
            "train_fingerprint": train_source.fingerprint(),
            "skipped_unreadable": [str(p) for p in train_source.skipped],
            "knn_train": cfg.data.knn_train or cfg.data.train,
            "val": cfg.data.val,
        },
        "protocol": {"knn": {"k": cfg.eval.knn_k, "temperature": cfg.eval.knn_t, "tap": "pooled", "view": "original"}},
        "knn": knn,
        "knn_note": note,
        "retained_pct": retained,
        "timing": timing,
        "approximations": approximations,
        "teacher_cache": cfg.cache.enabled,
        "machine": machine(),
        "versions": _versions(),
        "config": cfg.to_dict(),
    }


def format_summary(results: dict[str, Any]) -> str:
    """Plain-text table: teacher, random-init student, distilled student (k-NN top-1), and the times."""
    lines = []
    knn = results.get("knn")
    student_arch = results["student"]["arch"]
    names = {
        "teacher": (f"teacher {results['teacher']['name']}" if results.get("teacher") else "teacher")
        + (" (reference, unused in training)" if results.get("teacher_in_training") is False else ""),
        "random_init": f"random-init {student_arch}",
        "student": f"{'distilled' if results.get('teacher_in_training', True) else 'trained'} {student_arch} ({results['method']})",
    }
    k = results["protocol"]["knn"]["k"]
    if knn:
        width = max(len(n) for n in names.values()) + 2
        lines.append(f"{'model':<{width}}{'k-NN top-1':>11}{'top-5':>8}{'params (M)':>12}{'images/s':>10}")
        for key in ("teacher", "random_init", "student"):
            if key in knn:
                row = knn[key]
                lines.append(
                    f"{names[key]:<{width}}{row['top1']:>10.1f}%{row.get('top5', float('nan')):>7.1f}%"
                    f"{row['params_m']:>12.2f}{row['images_per_s']:>10.0f}"
                )
        extra = f"; {results['retained_pct']:.1f}% of the teacher's k-NN retained" if results.get("retained_pct") else ""
        lines.append(f"(weighted k-NN, k={k}, on {results['data']['val']}{extra})")
    else:
        lines.append(f"no k-NN numbers: {results.get('knn_note')}")
    t = results["timing"]
    parts = []
    if "teacher_signal_seconds" in t:
        parts.append(f"teacher signal {t['teacher_signal_seconds']:.0f} s")
    parts.append(f"training {t['train_seconds']:.0f} s ({t['train_images_per_s']:.0f} images/s)")
    if "eval_seconds" in t:
        parts.append(f"evaluation {t['eval_seconds']:.0f} s")
    lines.append("time: " + ", ".join(parts))
    lines.append(f"run directory: {results['run_dir']}")
    return "\n".join(lines)


def load_student_from_run(run_dir: str | Path, checkpoint: str | Path | None = None) -> tuple[DistillConfig, Student]:
    """Rebuild a run's student and load its weights from ``checkpoint`` (default ``checkpoints/last.ckpt``)."""
    run = existing_run_dir(run_dir)
    cfg = build_config(run / "config.yaml")
    path = Path(checkpoint) if checkpoint else run / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise ModelError(f"checkpoint {path} not found; has the run finished an epoch?")
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    student = build_student(cfg)
    weights = {k[len("student."):]: v for k, v in state.items() if k.startswith("student.")}
    student.load_state_dict(weights)
    return cfg, student


def evaluate(
    run: str | Path | None = None,
    *,
    checkpoint: str | Path | None = None,
    teacher: str | None = None,
    weights: str | None = None,
    train: str | None = None,
    val: str | None = None,
    k: int = 20,
    temperature: float = 0.07,
    full: bool = True,
    batch_size: int = 256,
    num_workers: int = 2,
    root: str = "~/.cache/ssdistill/datasets",
) -> dict[str, Any]:
    """Evaluate a run's student next to its teacher and a random-init student, or a teacher / timm model alone.

    For a run: ``{"knn": side-by-side k-NN (k, temperature), "evaluation": the full suite or None}``, also written
    to ``RUN/evaluation.json`` (features kept under ``RUN/features``). For a model alone: its k-NN row."""
    if run is None and checkpoint is not None:
        run = Path(checkpoint).resolve().parent.parent
    device = _compute_device("auto")
    if run is not None:
        cfg, student = load_student_from_run(run, checkpoint)
        updates = {
            "data": {"knn_train": train or cfg.data.knn_train, "val": val or cfg.data.val},
            "eval": {"knn_k": k, "knn_t": temperature, "suite": "full" if full else "knn"},
        }
        cfg = build_config(cfg, updates)
        train_source = seeded_subset(_open(cfg, cfg.data.train), cfg.data.train_subset, cfg.trainer.seed)
        initial = build_student(cfg).state_dict()
        teacher_model = build_teacher(cfg.teacher) if cfg.eval.teacher else None
        knn, suite, note = _evaluate(cfg, student, initial, teacher_model, train_source, None, device, existing_run_dir(run))
        if knn is None:
            raise DataError(note)
        record = {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "run_dir": str(run),
            "checkpoint": str(checkpoint or Path(run) / "checkpoints" / "last.ckpt"),
            "data": {"train": cfg.data.knn_train or cfg.data.train, "val": cfg.data.val},
            "knn": knn,
            "evaluation": suite,
            "machine": machine(),
            "versions": _versions(),
        }
        atomic_write_text(existing_run_dir(run) / "evaluation.json", json.dumps(record, indent=2))
        return record
    if teacher is None:
        raise ConfigError("ssdistill eval needs a run directory, --checkpoint, or --teacher NAME")
    if not train or not val:
        raise ConfigError("evaluating a model alone needs --train and --val (labelled image folders)")
    model = build_teacher(TeacherConfig(name=teacher, weights=weights))
    memory, query = open_images(train, root), open_images(val, root)
    return knn_side_by_side([Candidate(teacher, model, _teacher_view(model), model.preprocess.resolution)], memory, query, k, temperature, batch_size, num_workers, device)


def fill_cache(
    teacher: str,
    data: list[str],
    *,
    weights: str | None = None,
    output: str = "pooled",
    batch_size: int = 256,
    num_workers: int = 2,
    cache_dir: str | None = None,
    dtype: str = "float16",
    root: str = "~/.cache/ssdistill/datasets",
) -> list[dict[str, Any]]:
    """Fill (or check) the teacher cache for each dataset; returns shape, seconds and images/s per dataset."""
    model = build_teacher(TeacherConfig(name=teacher, weights=weights, output=output))
    device = _compute_device("auto")
    done = []
    for spec in data:
        source = open_images(spec, root)
        start = time.perf_counter()
        table = cached_teacher_features(model, source, spec, batch_size, num_workers, device, cache_dir, dtype)
        seconds = time.perf_counter() - start
        done.append({"data": spec, "shape": list(table.shape), "seconds": seconds, "images_per_s": len(source) / max(seconds, 1e-9)})
    return done
