"""Deployed latency, measured side by side: ONNX models run by onnxruntime in one process, in interleaved rounds.

A latency measured on one machine says little about another, and two latencies measured minutes apart on a shared
machine can differ by more than the models do. So every model of a comparison is timed in the same process, in rounds
that visit each model in turn (the order rotates from round to round), and a model's figure is the median over the
rounds of its mean time per call; a model is reported as a ratio to a reference model (the teacher) timed in the same
rounds. Absolute milliseconds are kept, but only beside the machine they came from."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median

import numpy as np

from ssdistill.errors import ModelError


@dataclass(frozen=True)
class Deployed:
    """One exported model: a name, its ONNX file and the side of the square images it takes (in [0, 1])."""

    name: str
    path: Path
    side: int


def default_threads() -> int:
    """The CPUs this process may run on: what onnxruntime uses by default, written down so a record says it."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def onnx_session(path: Path, threads: int):
    """An onnxruntime CPU session with ``threads`` intra-op threads and sequential execution."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ModelError("measuring deployed latency needs onnxruntime: pip install 'ssdistill[onnx]'") from exc
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    # no busy-waiting: a session's idle workers would otherwise spin and take the cores from the model timed next
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda images: session.run(None, {name: images})


def measure_latency(
    models: Sequence[Deployed],
    batch_sizes: Sequence[int] = (1, 32),
    rounds: int = 7,
    min_seconds: float = 0.2,
    threads: int | None = None,
    *,
    runner: Callable[[Path, int], Callable] = onnx_session,
    clock: Callable[[], float] = time.perf_counter,
) -> dict:
    """Milliseconds per call of every model at every batch size, timed in ``rounds`` interleaved rounds.

    Before the rounds each model runs twice (warm-up) and is given a number of calls per round that lasts at least
    ``min_seconds`` (from the second warm-up call: the first one also allocates); a round times that many calls of each model in turn, the
    first model of round r being model r mod n. Returns ``{"threads", "rounds", "ms": {batch: {name: median}},
    "spread": {batch: {name: (lowest, highest)}}, "calls": {batch: {name: calls per round}}}``; batch sizes are
    strings (JSON keys). ``runner`` and ``clock`` are onnxruntime and the wall clock; tests pass their own."""
    if len({m.name for m in models}) != len(models):
        raise ValueError("measure_latency: two models share a name")
    if rounds < 1 or not batch_sizes:
        raise ValueError("measure_latency: at least one round and one batch size")
    models, threads = list(models), threads or default_threads()
    run = {m.name: runner(m.path, threads) for m in models}
    result: dict = {"threads": threads, "rounds": rounds, "ms": {}, "spread": {}, "calls": {}, "load_before": _load()}
    generator = np.random.default_rng(0)
    for batch in batch_sizes:
        images = {m.name: generator.random((batch, 3, m.side, m.side), dtype=np.float32) for m in models}
        calls = {}
        for m in models:
            for _ in range(2):
                start = clock()
                run[m.name](images[m.name])
                second = clock() - start
            calls[m.name] = max(1, math.ceil(min_seconds / second)) if second > 0 else 1
        per_call: dict[str, list[float]] = {m.name: [] for m in models}
        for r in range(rounds):
            for m in models[r % len(models) :] + models[: r % len(models)]:
                start = clock()
                for _ in range(calls[m.name]):
                    run[m.name](images[m.name])
                per_call[m.name].append((clock() - start) / calls[m.name])
        key = str(batch)
        result["ms"][key] = {name: 1000 * median(times) for name, times in per_call.items()}
        result["spread"][key] = {name: (1000 * min(times), 1000 * max(times)) for name, times in per_call.items()}
        result["calls"][key] = calls
    result["load_after"] = _load()  # the 1-minute load average: other work on the machine while it was timed
    return result


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def latency_ratios(measured: dict, reference: str) -> dict[str, dict[str, float]]:
    """{batch: {name: its median / the reference's median}} from :func:`measure_latency`'s result."""
    ratios = {}
    for batch, by_name in measured["ms"].items():
        if reference not in by_name:
            raise ValueError(f"latency_ratios: no model named {reference!r} was measured")
        ratios[batch] = {name: ms / by_name[reference] for name, ms in by_name.items()}
    return ratios


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (cost, accuracy) that no other point beats: none is at most as costly and at least as
    accurate with one of the two strictly better. Sorted by cost; ties (equal points) are all kept."""
    front = []
    for i, (cost, accuracy) in enumerate(points):
        beaten = any(c <= cost and a >= accuracy and (c < cost or a > accuracy) for j, (c, a) in enumerate(points) if j != i)
        if not beaten:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))
