"""Deployed latency (ssdistill.eval.latency): the interleaved rounds, the median, the ratios and the Pareto front, with
a simulated clock (no timing is asserted: a fake model advances the clock by a fixed cost per image)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssdistill.eval.latency import Deployed, latency_ratios, measure_latency, pareto_front


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_models(clock: Clock, cost_per_image: dict[str, float], log: list[str] | None = None, slow_once: dict[str, float] | None = None):
    """A runner whose model NAME costs cost_per_image[NAME] seconds per image; ``slow_once``: one extra delay on the
    first timed round only (after the two warm-up calls and the calibration)."""
    calls: dict[str, int] = {}

    def runner(path: Path, threads: int):
        name = path.name

        def run(images) -> None:
            calls[name] = calls.get(name, 0) + 1
            clock.now += cost_per_image[name] * images.shape[0]
            if slow_once and name in slow_once and calls[name] == 3:  # the first call of the first timed round
                clock.now += slow_once[name]
            if log is not None:
                log.append(name)

        return run

    return runner


def test_medians_are_the_time_per_call_and_ratios_divide_by_the_reference():
    clock = Clock()
    models = [Deployed("student", Path("student"), 8), Deployed("teacher", Path("teacher"), 16)]
    runner = fake_models(clock, {"student": 0.001, "teacher": 0.004})
    result = measure_latency(models, (1, 4), rounds=3, min_seconds=0.01, threads=1, runner=runner, clock=clock)
    assert result["threads"] == 1 and result["rounds"] == 3
    assert result["ms"]["1"] == pytest.approx({"student": 1.0, "teacher": 4.0})
    assert result["ms"]["4"] == pytest.approx({"student": 4.0, "teacher": 16.0})
    assert result["calls"]["1"] == {"student": 10, "teacher": 3}  # ceil(0.01 s / the second warm-up call)
    assert "load_before" in result and "load_after" in result
    ratios = latency_ratios(result, "teacher")
    assert set(ratios) == {"1", "4"} and all(r == pytest.approx({"student": 0.25, "teacher": 1.0}) for r in ratios.values())
    with pytest.raises(ValueError, match="no model named 'other'"):
        latency_ratios(result, "other")


def test_one_disturbed_round_does_not_move_the_median():
    clock = Clock()
    models = [Deployed("a", Path("a"), 8), Deployed("b", Path("b"), 8)]
    runner = fake_models(clock, {"a": 0.002, "b": 0.002}, slow_once={"a": 5.0})
    result = measure_latency(models, (1,), rounds=5, min_seconds=0.004, threads=1, runner=runner, clock=clock)
    assert result["ms"]["1"] == pytest.approx({"a": 2.0, "b": 2.0})
    low, high = result["spread"]["1"]["a"]
    assert low == pytest.approx(2.0) and high > 1000  # the disturbed round is in the spread, not in the median


def test_rounds_interleave_the_models_and_rotate_which_goes_first():
    clock, log = Clock(), []
    models = [Deployed(n, Path(n), 4) for n in ("a", "b", "c")]
    runner = fake_models(clock, {"a": 1.0, "b": 1.0, "c": 1.0}, log)
    measure_latency(models, (1,), rounds=3, min_seconds=0.5, threads=1, runner=runner, clock=clock)
    timed = log[6:]  # after two warm-up calls of each model; one call per round each (min_seconds below one call)
    assert timed == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


def test_bad_arguments_are_refused():
    models = [Deployed("a", Path("a"), 4), Deployed("a", Path("b"), 4)]
    with pytest.raises(ValueError, match="share a name"):
        measure_latency(models, runner=lambda p, t: None)
    with pytest.raises(ValueError, match="at least one round"):
        measure_latency(models[:1], rounds=0, runner=lambda p, t: None)


def test_pareto_front_keeps_the_points_nothing_beats():
    points = [(1.0, 50.0), (2.0, 60.0), (3.0, 55.0), (0.5, 40.0), (2.0, 60.0), (1.0, 45.0)]
    # (3, 55) is beaten by (2, 60); (1, 45) by (1, 50), equal cost and better accuracy; the two (2, 60) tie and stay
    assert pareto_front(points) == [3, 0, 1, 4]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 1.0)]) == [0]


def test_onnx_sessions_time_real_models(tmp_path):
    """onnxruntime end to end on two exported students (figures not asserted: only that both were timed)."""
    import torch

    from ssdistill.export import export_onnx
    from ssdistill.models.students import Student

    torch.manual_seed(0)
    paths = []
    for arch in ("mobilenetv3_small_050", "cifar_resnet20"):
        paths.append(Deployed(arch, export_onnx(Student(arch, resolution=32).eval(), 32, tmp_path / f"{arch}.onnx"), 32))
    result = measure_latency(paths, (1, 2), rounds=2, min_seconds=0.01, threads=1)
    assert set(result["ms"]) == {"1", "2"} and all(v > 0 for by in result["ms"].values() for v in by.values())
