"""One frontier row measured end to end on the smoke tier (600 CIFAR-10 images, 2 epochs): trained, evaluated,
exported to ONNX beside its teacher and timed; read back the second time."""

from __future__ import annotations

import json

from benchmarks import frontier


def test_a_frontier_row_is_measured_and_read_back(tmp_path):
    results, runs = tmp_path / "results", tmp_path / "runs"
    args = ["--tier", "smoke", "--bench", "q2", "--only", "cifar_resnet20-32", "--results", str(results), "--runs", str(runs)]
    assert frontier.main(args) == 0
    record = json.loads((results / "q2" / "cifar_resnet20-32-smoke.json").read_text())
    latency = record["latency"]
    assert set(latency["ratio"]) == {"1", "32"} and all(r > 0 for r in latency["ratio"].values())
    assert latency["ms"]["1"]["student"] / latency["ms"]["1"]["teacher"] == latency["ratio"]["1"]
    assert latency["teacher_side"] == 32 and record["frontier"]["epochs"] == frontier.SMOKE_EPOCHS
    assert record["knn"]["student"]["top1"] > record["knn"]["random_init"]["top1"]  # it learned something in 2 epochs
    run = runs / "q2-frontier-cifar_resnet20-32-smoke"
    # the exported student is the CIFAR ResNet by its registered name (timm's config.json needs the architecture)
    (config,) = run.glob("export/**/config.json")
    assert json.loads(config.read_text())["architecture"] == "cifar_resnet20"
    assert (config.parent / "student.onnx").is_file() and (runs / "q2-frontier-teacher-smoke.onnx").is_file()
    assert "<svg" in (results / "q2-smoke.html").read_text()
    (run / "results.json").unlink()  # the second call reads the row's record back instead of training or timing again
    assert frontier.main(args) == 0
    assert json.loads((results / "q2" / "cifar_resnet20-32-smoke.json").read_text())["latency"] == latency
