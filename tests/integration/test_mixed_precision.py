"""trainer.precision=bf16-mixed trains on the CPU: the student's layers really compute in bfloat16 under autocast,
its weights stay float32, a queue method stays finite, and the run record says which precision was used."""

import csv
import math

import lightning as L
import pytest
import torch

from ssdistill import distill

from integration.common import tiny_config


class Dtypes(L.Callback):
    """The dtype of the student's first convolution output during training steps."""

    def __init__(self) -> None:
        self.seen = set()

    def on_train_start(self, trainer, module) -> None:
        conv = next(m for m in module.students()["student"].modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_hook(lambda mod, args, out: self.seen.add(out.dtype) if mod.training else None)


@pytest.mark.parametrize("method", [{"name": "feature", "projector_hidden": [32]}, {"name": "moco", "out_dim": 16, "queue_size": 64}])
def test_bf16_mixed_trains_on_cpu_in_bfloat16_with_float32_weights(tmp_path, method):
    config = tiny_config(tmp_path, trainer={"epochs": 1, "precision": "bf16-mixed", "log_every_n_steps": 1}, student={"channels_last": True})
    config["method"] = method
    dtypes = Dtypes()
    results = distill(config, callbacks=[dtypes], quiet=True)
    assert dtypes.seen == {torch.bfloat16}
    losses = [float(row["train/loss_step"]) for row in csv.DictReader(open(tmp_path / "runs" / "tiny" / "metrics.csv")) if row["train/loss_step"]]
    assert len(losses) == results["steps"] and all(math.isfinite(loss) for loss in losses)
    assert results["training"]["precision"] == "bf16-mixed" and results["training"]["student_channels_last"] == {"student": True}
    state = torch.load(tmp_path / "runs" / "tiny" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(v.dtype == torch.float32 for k, v in state.items() if k.startswith("student.") and v.is_floating_point())


def test_bf16_true_trains_bfloat16_weights_keeps_the_ema_in_float32_and_evaluates_on_cpu(tmp_path):
    """trainer.precision=bf16-true: Lightning converts the module to bfloat16 (student, heads, DisCo's mean student and
    its queue); the engine's EMA copy stays float32 (its 1 % steps would round away in bfloat16); the monitors, the
    evaluation (in float32) and the record work; the checkpoint holds what was trained."""
    config = tiny_config(
        tmp_path,
        trainer={"epochs": 2, "precision": "bf16-true", "ema_momentum": 0.99, "log_every_n_steps": 1},
        eval={"align_images": 16, "random_init": True},
    )
    config["method"] = {"name": "disco", "queue_size": 64}
    dtypes = Dtypes()
    results = distill(config, callbacks=[dtypes], quiet=True)
    assert dtypes.seen == {torch.bfloat16}
    assert results["training"]["precision"] == results["training"]["precision_used"] == "bf16-true"
    assert {"student", "student_ema", "random_init"} <= set(results["knn"])
    assert all(0 < row["top1"] <= 100 for row in results["knn"].values())
    rows = list(csv.DictReader(open(tmp_path / "runs" / "tiny" / "metrics.csv")))
    losses = [float(row["train/loss_step"]) for row in rows if row["train/loss_step"]]
    cka = [float(row["monitor/teacher_cka"]) for row in rows if row.get("monitor/teacher_cka")]
    assert len(losses) == results["steps"] == 8 and all(math.isfinite(x) for x in losses) and len(cka) == 2
    state = torch.load(tmp_path / "runs" / "tiny" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    trained = {k: v for k, v in state.items() if not k.startswith("ema.") and v.is_floating_point()}
    assert any(k.startswith("queue.") for k in trained) and all(v.dtype == torch.bfloat16 for v in trained.values())
    ema = {k: v for k, v in state.items() if k.startswith("ema.") and v.is_floating_point()}
    assert ema and all(v.dtype == torch.float32 for v in ema.values())
    # float32 values no bfloat16 holds: the copy moved by steps finer than bfloat16 resolves
    weight = ema["ema.backbone.conv1.weight"] if "ema.backbone.conv1.weight" in ema else next(v for v in ema.values() if v.ndim == 4)
    assert not torch.equal(weight, weight.bfloat16().float())


def test_a_resumed_bf16_true_run_equals_the_uninterrupted_one_bitwise_float32_ema_included(tmp_path):
    """The checkpoint of a bf16-true run holds bfloat16 weights and the float32 EMA copy; Lightning loads it into the
    float32-built module before converting it, and the EMA copy is taken back at full width."""
    from integration.test_distill import Interrupt

    base = tiny_config(tmp_path, trainer={"epochs": 2, "precision": "bf16-true", "ema_momentum": 0.99})
    distill({**base, "run": {"dir": str(tmp_path / "runs"), "name": "whole"}}, quiet=True)
    with pytest.raises(RuntimeError, match="simulated kill"):
        distill({**base, "run": {"dir": str(tmp_path / "runs"), "name": "killed"}}, callbacks=[Interrupt(at=1)], quiet=True)
    distill(resume=tmp_path / "runs" / "killed", quiet=True)
    a, b = (torch.load(tmp_path / "runs" / name / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"] for name in ("whole", "killed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert a["ema.backbone.conv1.0.weight"].dtype == torch.float32 and a["student.backbone.conv1.0.weight"].dtype == torch.bfloat16


@pytest.mark.parametrize("method", ["mcl_supervised", "cka"])
def test_bf16_true_runs_methods_whose_heads_read_teacher_outputs(tmp_path, method):
    """CKA's adapters take the teachers' cached float32 features, supervised MCL's classifiers are scored after
    training: under bf16-true every layer takes its input in its weights' dtype, and the evaluation runs in float32."""
    from integration.common import cka_tasks

    config = tiny_config(tmp_path, trainer={"epochs": 1, "precision": "bf16-true", "log_every_n_steps": 1})
    if method == "cka":
        config.pop("teacher")
        for section, values in cka_tasks(tmp_path).items():
            config[section] = {**config.get(section, {}), **values}
        config["method"] = cka_tasks(tmp_path)["method"]
    else:
        config["method"] = {"name": "mcl", "mode": "supervised"}
    results = distill(config, quiet=True)
    assert results["training"]["precision_used"] == "bf16-true" and results["steps"] > 0
    rows = [row for row in csv.DictReader(open(tmp_path / "runs" / "tiny" / "metrics.csv")) if row.get("train/loss_step")]
    assert rows and all(math.isfinite(float(row["train/loss_step"])) for row in rows)
    state = torch.load(tmp_path / "runs" / "tiny" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.bfloat16}
